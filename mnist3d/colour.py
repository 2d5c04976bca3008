"""Voxel values to RGB through a matplotlib colormap, vectorised as a lookup table."""

from __future__ import annotations

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


def colour_voxels(x: np.ndarray, colormap: str = "Oranges", chunk: int = 32) -> np.ndarray:
    """Flat voxel vectors (N, 4096) in [0, 1] to RGB grids (N, 16, 16, 16, 3) float32."""
    x = np.asarray(x).reshape(len(x), -1)
    table = colormap_table(colormap)
    # One 12-byte item per RGB triple: a 1-D take copies whole triples, much faster than take(axis=0).
    triples = np.ascontiguousarray(table).view(np.dtype((np.void, 12))).ravel()
    rgb = np.empty((len(x), x.shape[1], 3), dtype=np.float32)
    packed = rgb.view(triples.dtype).reshape(len(x), x.shape[1])
    # Small chunks keep the float temporaries in cache.
    for start in range(0, len(x), chunk):
        stop = start + chunk
        np.take(triples, colour_indices(x[start:stop], len(table)), out=packed[start:stop])
    return rgb.reshape(len(x), GRID, GRID, GRID, 3)
