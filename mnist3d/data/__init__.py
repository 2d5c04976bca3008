"""The fetch stage's sources (Kaggle, a local copy, the synthetic generator) and the dataset's voxelisation."""
