"""Voxel values to RGB through a matplotlib colormap, vectorised as a lookup table."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from mnist3d import GRID
from mnist3d.parallel import for_each_chunk

RGB_BYTES = 3 * 4  # one float32 RGB triple


@cache
def colormap_table(name: str) -> np.ndarray:
    """The colormap's RGB entries as a (N, 3) float32 table."""
    import matplotlib

    colormap = matplotlib.colormaps[name]
    return colormap(np.arange(colormap.N))[:, :3].astype(np.float32)


@cache
def _joint_table(name: str, grids: int) -> np.ndarray:
    """One row per combination of `grids` colour entries, holding their RGB triples side by side, as void items.

    Row i * N + j of the two-grid table is entry i's RGB then entry j's, so one take colours both grids
    straight into interleaved channels: no second pass to concatenate them.
    """
    table = colormap_table(name)
    combinations = np.indices((len(table),) * grids).reshape(grids, -1)
    rows = np.concatenate([table[entry] for entry in combinations], axis=1)
    return np.ascontiguousarray(rows).view(np.dtype((np.void, RGB_BYTES * grids))).ravel()


def colour_indices(x: np.ndarray, entries: int) -> np.ndarray:
    """The table row of each value in [0, 1], exactly as matplotlib picks it (x * N, with 1.0 in the last row)."""
    dtype = np.uint8 if entries <= 256 else np.uint16
    return np.minimum(x * entries, entries - 1).astype(dtype)


def colour_grids(grids: Sequence[np.ndarray], colormap: str = "Oranges", out: np.ndarray | None = None) -> np.ndarray:
    """Equal-length flat voxel vectors (N, 4096) in [0, 1] to (N, 16, 16, 16, 3 * len(grids)) float32.

    Each voxel holds every grid's RGB in turn, so two grids give RGB then the second grid's RGB.
    `out`, a C-contiguous float32 array of that shape, receives the result instead of a new array.
    """
    grids = [np.asarray(grid).reshape(len(grid), -1) for grid in grids]
    count, voxels = grids[0].shape
    entries = len(colormap_table(colormap))
    table = _joint_table(colormap, len(grids))
    index_dtype = np.min_scalar_type(len(table) - 1)
    shape = (count, GRID, GRID, GRID, 3 * len(grids))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    packed = out.view(table.dtype).reshape(count, voxels)

    def colour_rows(rows: slice) -> None:
        index = colour_indices(grids[0][rows], entries).astype(index_dtype, copy=False)
        for grid in grids[1:]:
            index *= entries
            index += colour_indices(grid[rows], entries)
        # Indices are in range by construction; mode="clip" skips the bounds-checked path, which copies `out`.
        np.take(table, index, out=packed[rows], mode="clip")

    for_each_chunk(count, colour_rows)
    return out


def colour_voxels(x: np.ndarray, colormap: str = "Oranges", out: np.ndarray | None = None) -> np.ndarray:
    """Flat voxel vectors (N, 4096) in [0, 1] to RGB grids (N, 16, 16, 16, 3) float32 (into `out` if given)."""
    return colour_grids([x], colormap, out)
