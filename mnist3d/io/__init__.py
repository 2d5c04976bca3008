"""Files in and out, trusting none: atomic writes, the Kaggle schema, the HDF5 and predict readers, data/processed."""
