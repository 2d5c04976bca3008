"""What the network sees: each voxel grid through the colormap, plus its slab-aligned copy when asked."""

from __future__ import annotations

import numpy as np

from mnist3d.align import align_slabs
from mnist3d.colour import colour_voxels

RGB = 3  # the first channels are always the grid as the dataset gives it


def network_inputs(vectors: np.ndarray, colormap: str, align: str) -> np.ndarray:
    """Flat vectors (N, 4096) to float32 grids (N, 16, 16, 16, 3), or 6 channels with an aligned copy.

    `align` is none, plane or axes (see mnist3d.align.align_slabs).
    """
    grids = colour_voxels(vectors, colormap)
    if align == "none":
        return grids
    return np.concatenate([grids, colour_voxels(align_slabs(vectors, align), colormap)], axis=-1)
