"""The train/validation split: whole (original, rotated) pairs, so no digit is in both."""

from __future__ import annotations

import numpy as np

from mnist3d.errors import PipelineError


def split_pairs(count: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, splitting whole (original, rotated) pairs so no digit is in both."""
    pairs = np.random.default_rng(seed).permutation(count // 2)
    held_out = max(1, round(len(pairs) * validation_split))
    if held_out >= len(pairs):
        raise PipelineError(
            f"params.yaml: train.validation_split {validation_split} holds out all {len(pairs)} "
            "(original, rotated) pairs of the training data; lower it"
        )
    rows = np.stack([2 * pairs, 2 * pairs + 1], axis=1)
    return np.sort(rows[held_out:].ravel()), np.sort(rows[:held_out].ravel())
