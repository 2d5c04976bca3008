"""The cube's symmetries as moves of voxel grids: for augmentation in training and for views at test time."""

from __future__ import annotations

import itertools

import numpy as np

RGB = 3  # the first channels are the grid as the dataset gives it; any after them are its aligned copy

Symmetry = tuple[tuple[int, int, int], tuple[int, ...]]


def cube_symmetries() -> list[Symmetry]:
    """The 48 symmetries of the cube as (axis permutation, flipped axes), the identity first."""
    return [
        (perm, tuple(a for a, f in zip(range(3), flips, strict=True) if f))
        for perm in itertools.permutations(range(3))
        for flips in itertools.product((0, 1), repeat=3)
    ]


def cube_rotations() -> list[Symmetry]:
    """The 24 proper rotations among the cube symmetries (determinant +1), the identity first."""

    def determinant(symmetry: Symmetry) -> int:
        perm, flips = symmetry
        inversions = sum(perm[i] > perm[j] for i in range(3) for j in range(i + 1, 3))
        return (-1) ** (inversions + len(flips))

    return [s for s in cube_symmetries() if determinant(s) == 1]


def apply_symmetry(grids: np.ndarray, symmetry: Symmetry) -> np.ndarray:
    """Apply one cube symmetry to the dataset channels of grids shaped (N, 16, 16, 16, C).

    Aligned channels (after the first 3) stay as they are: alignment undoes any turn of the grid anyway.
    """
    perm, flips = symmetry
    moved = np.transpose(grids[..., :RGB], (0, *(p + 1 for p in perm), 4))
    moved = np.flip(moved, axis=tuple(f + 1 for f in flips)) if flips else moved
    return moved if grids.shape[-1] == RGB else np.concatenate([moved, grids[..., RGB:]], axis=-1)


# The turns that alignment cannot tell apart: it fixes the slab's normal and the digit's long axis, each only up to
# its sign, so an aligned digit may come out under any of these four half-turns (the identity, and flips of two axes).
ALIGNED_FLIPS = ((), (2, 3), (1, 3), (1, 2))  # axes of (N, z, y, x, C) grids


def flip_aligned(grids: np.ndarray, choices: np.ndarray) -> None:
    """Turn the aligned channels of each grid in place by the half-turn ALIGNED_FLIPS[choice]."""
    for choice, axes in enumerate(ALIGNED_FLIPS):
        rows = np.flatnonzero(choices == choice)
        if axes and len(rows):
            grids[rows, ..., RGB:] = np.flip(grids[rows, ..., RGB:], axis=axes)
