"""After training: test-time views, the plots, and predict on new samples."""
