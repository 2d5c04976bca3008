"""Predictions a block of rows at a time, averaged over cube rotations of the grids (test-time augmentation)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from mnist3d import NUM_CLASSES
from mnist3d.errors import PipelineError
from mnist3d.features.symmetry import apply_symmetry, cube_rotations

BLOCK_ROWS = 1024  # rows through the network at once: memory stays flat however many rows there are


def block_rows(batch_size: int) -> int:
    """Rows per block: whole batches, so that no row's prediction depends on how the rows were cut into blocks."""
    return batch_size * max(1, BLOCK_ROWS // batch_size)


def blocks(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """`rows` in consecutive blocks of block_rows(batch_size)."""
    step = block_rows(batch_size)
    return (rows[start : start + step] for start in range(0, len(rows), step))


def predict_blocks(
    model: Any, grid_blocks: Iterable[np.ndarray], views: int, batch_size: int, model_path: str | os.PathLike
) -> np.ndarray:
    """Class probabilities (N, 10) of blocks of grids, each averaged over the first `views` cube rotations (1 = plain
    prediction). A model whose outputs are not finite is refused: its weights are damaged."""
    parts = []
    for grids in grid_blocks:
        total = 0.0
        for rotation in cube_rotations()[:views]:
            total = total + model.predict(apply_symmetry(grids, rotation), batch_size=batch_size, verbose=0)
        parts.append(total / views)
    probabilities = np.concatenate(parts) if parts else np.empty((0, NUM_CLASSES), np.float32)
    if not np.isfinite(probabilities).all():
        raise PipelineError(
            f"{model_path} gives outputs that are NaN or Inf: its weights are damaged; retrain it: dvc repro --force train"
        )
    return probabilities


def predict_with_views(
    model: Any, grids: np.ndarray, views: int, batch_size: int, model_path: str | os.PathLike
) -> np.ndarray:
    """predict_blocks over an array of grids (N, 16, 16, 16, C)."""
    return predict_blocks(model, blocks(grids, batch_size), views, batch_size, model_path)
