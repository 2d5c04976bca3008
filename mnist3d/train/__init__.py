"""The train stage: the model, its batches and fresh copies, the fit, the replicas and the live curves."""
