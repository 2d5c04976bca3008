"""3D MNIST: fetch, colour, train and evaluate a Conv3D classifier as DVC stages."""

import os

# TensorFlow's C++ INFO/WARNING lines bury the stage output; real errors still print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CLASSES = 10
GRID = 16  # voxels per axis in the Kaggle vectors
VOXELS = GRID**3
