"""What the network sees: each voxel grid through the colormap, plus its slab-aligned copy when asked."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from mnist3d.features.align import align_slabs
from mnist3d.features.colour import colour_grids
from mnist3d.io.processed import write_processed
from mnist3d.io.schema import Split
from mnist3d.parallel import one_ahead


def network_inputs(vectors: np.ndarray, colormap: str, align: str) -> np.ndarray:
    """Flat vectors (N, 4096) to float32 grids (N, 16, 16, 16, input_channels(align)): RGB, then the aligned copy's.

    `align` is none, plane or axes (see mnist3d.features.align.align_slabs).
    """
    if align == "none":
        return colour_grids([vectors], colormap)
    return colour_grids([vectors, align_slabs(vectors, align)], colormap)


def input_channels(align: str) -> int:
    """The channels network_inputs gives: RGB, and RGB again for the aligned copy unless `align` is none."""
    return 3 if align == "none" else 6


def network_input_blocks(vectors: np.ndarray, colormap: str, align: str, rows: int = 128) -> Iterator[np.ndarray]:
    """network_inputs for consecutive blocks of `rows` vectors: what a writer streams without holding it all.

    Blocks of ~12 MB are reused by the allocator, where one full-size array would take fresh pages.
    """
    for start in range(0, len(vectors), rows):
        yield network_inputs(vectors[start : start + rows], colormap, align)


def write_network_inputs(path: str | os.PathLike, split: Split, colormap: str, align: str) -> None:
    """Write a split's network inputs and labels as an NPZ, each block made while the one before is written."""
    write_processed(path, one_ahead(network_input_blocks(split.x, colormap, align)), split.y)
