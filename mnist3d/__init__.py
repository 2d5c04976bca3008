"""3D MNIST: fetch, colour, train and evaluate a Conv3D classifier as DVC stages."""

NUM_CLASSES = 10
GRID = 16  # voxels per axis in the Kaggle vectors
VOXELS = GRID**3
