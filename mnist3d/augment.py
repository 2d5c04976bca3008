"""Training-time augmentation: fresh rotated, noisy copies of the training clouds, or cube symmetries of the grids."""

from __future__ import annotations

import numpy as np

from mnist3d import GRID
from mnist3d.tta import apply_symmetry, cube_symmetries
from mnist3d.voxels import random_rotations


def rotated_copies(clouds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Voxel vectors (N, 4096) of fresh copies of (3, N) clouds, rotated and noised as the dataset's odd rows were.

    Binning uses plain floor division: with continuous noise, a point lands exactly on a bin edge
    with probability zero, so the dataset's exact searchsorted tie rule is not needed here.
    """
    # cloud @ M in the dataset's row-vector convention is M.T @ cloud here
    rotations = random_rotations(rng, len(clouds)).transpose(0, 2, 1).astype(np.float32)
    vectors = np.empty((len(clouds), GRID**3), dtype=np.float64)
    for row, (cloud, rotation) in enumerate(zip(clouds, rotations, strict=True)):
        points = rotation @ cloud
        spread = 0.25 * points.std(axis=1, keepdims=True)
        points += (rng.random(points.shape, dtype=np.float32) * 2 - 1) * spread
        low, high = points.min(axis=1) - 0.001, points.max(axis=1) + 0.001
        side = (high - low).max()
        low -= (side - (high - low)) / 2  # grow the box to a cube around its centre
        index = ((points - low[:, None]) * (GRID / side)).astype(np.int32)
        np.clip(index, 0, GRID - 1, out=index)
        counts = np.bincount(index[0] + GRID * index[1] + GRID * GRID * index[2], minlength=GRID**3)
        vectors[row] = counts / counts.max()
    return vectors


def random_symmetries(grids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each grid under a cube symmetry drawn at random: exact augmentation when no point clouds exist."""
    symmetries = cube_symmetries()
    choice = rng.integers(len(symmetries), size=len(grids))
    out = np.empty_like(grids)
    for index in np.unique(choice):
        rows = np.nonzero(choice == index)[0]
        out[rows] = apply_symmetry(grids[rows], symmetries[index])
    return out
