"""Test-time augmentation: class probabilities averaged over cube rotations of the grids."""

from __future__ import annotations

import numpy as np

from mnist3d.features.symmetry import apply_symmetry, cube_rotations


def predict_with_views(model, grids: np.ndarray, views: int, batch_size: int) -> np.ndarray:
    """Class probabilities averaged over the first `views` cube rotations (1 = plain prediction)."""
    total = 0.0
    for rotation in cube_rotations()[:views]:
        total = total + model.predict(apply_symmetry(grids, rotation), batch_size=batch_size, verbose=0)
    return total / views
