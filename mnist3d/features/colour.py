"""Voxel values to RGB through a matplotlib colormap, vectorised as a lookup table."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from mnist3d import GRID


@cache
def colormap_table(name: str) -> np.ndarray:
    """The colormap's RGB entries as a (N, 3) float32 table."""
    import matplotlib

    colormap = matplotlib.colormaps[name]
    return colormap(np.arange(colormap.N))[:, :3].astype(np.float32)


def colour_indices(x: np.ndarray, entries: int) -> np.ndarray:
    """The table row of each value in [0, 1], exactly as matplotlib picks it (x * N, with 1.0 in the last row)."""
    dtype = np.uint8 if entries <= 256 else np.uint16
    return np.minimum(x * entries, entries - 1).astype(dtype)


def colour_grids(grids: Sequence[np.ndarray], colormap: str = "Oranges", out: np.ndarray | None = None) -> np.ndarray:
    """Equal-length flat voxel vectors (N, 4096) in [0, 1] to (N, 16, 16, 16, 3 * len(grids)) float32.

    Each voxel holds every grid's RGB in turn, so two grids give RGB then the second grid's RGB.
    `out`, a C-contiguous float32 array of that shape, receives the result instead of a new array.
    """
    table = colormap_table(colormap)
    # (N, 4096, grids): taking table rows for these gives (N, 4096, grids, 3), each voxel's RGBs side by side.
    index = np.stack([colour_indices(np.asarray(grid).reshape(len(grid), -1), len(table)) for grid in grids], axis=-1)
    shape = (len(index), GRID, GRID, GRID, 3 * len(grids))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    # Indices are in range by construction; mode="clip" skips the checked mode's buffered copy of `out`.
    np.take(table, index, axis=0, out=out.reshape(*index.shape, 3), mode="clip")
    return out
