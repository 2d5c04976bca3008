"""The batch sources: each epoch's shuffled training grids with its fresh copies, and the validation batches."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mnist3d import NUM_CLASSES
from mnist3d.features.symmetry import ALIGNED_FLIPS, RGB, flip_aligned


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> Any:
    """A batched tf.data pipeline of (voxels, one-hot label) in order, for validation."""
    import tensorflow as tf

    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(batch_size)
        .map(lambda voxels, label: (voxels, tf.one_hot(label, NUM_CLASSES)), num_parallel_calls=tf.data.AUTOTUNE)
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class EpochBatches:
    """Batches for one epoch at a time: the fixed training grids plus, with augmentation, fresh copies.

    Each epoch's fresh copies and order come from a generator seeded by (seed, epoch), so runs repeat
    exactly; the next epoch is prepared on a worker thread while the current one trains, up to `epochs`.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int,
        make_fresh=None,
        fresh_labels=None,
        epochs: int | None = None,
        flip_aligned: bool = False,
    ):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.make_fresh, self.fresh_labels, self.flip_aligned = make_fresh, fresh_labels, flip_aligned
        self.size = len(y) + (len(fresh_labels) if make_fresh else 0)
        self.epoch, self.epochs = 0, epochs
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._next = self._pool.submit(self._prepare, 0)

    def _prepare(self, epoch: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        rng = np.random.default_rng([self.seed, epoch])
        fresh = self.make_fresh(rng) if self.make_fresh else None
        order = rng.permutation(self.size)
        return fresh, order, rng.integers(len(ALIGNED_FLIPS), size=self.size) if self.flip_aligned else None

    def steps(self) -> int:
        return -(-self.size // self.batch_size)

    def __call__(self):
        """Yield (grids, one-hot labels) batches for the next epoch."""
        fresh, order, flips = (self._next or self._pool.submit(self._prepare, self.epoch)).result()
        self.epoch += 1
        # The last epoch prepares nothing more: that work would only compete with its training.
        self._next = None if self.epoch == self.epochs else self._pool.submit(self._prepare, self.epoch)
        labels = self.y if fresh is None else np.concatenate([self.y, self.fresh_labels])
        eye = np.eye(NUM_CLASSES, dtype=np.float32)
        for start in range(0, self.size, self.batch_size):
            rows = np.sort(order[start : start + self.batch_size])
            fixed = rows[rows < len(self.y)]
            grids = self.x[fixed]
            if fresh is not None and len(fixed) < len(rows):
                grids = np.concatenate([grids, fresh[rows[len(fixed) :] - len(self.y)]])
            if flips is not None:
                flip_aligned(grids, flips[rows])
            yield grids, eye[labels[rows]]

    def dataset(self):
        """This source as a prefetching tf.data pipeline with a known number of steps."""
        import tensorflow as tf

        spec = (
            tf.TensorSpec((None, *self.x.shape[1:]), tf.float32),
            tf.TensorSpec((None, NUM_CLASSES), tf.float32),
        )
        data = tf.data.Dataset.from_generator(self, output_signature=spec)
        return data.apply(tf.data.experimental.assert_cardinality(self.steps())).prefetch(2)


def epoch_batches(params: dict[str, Any], x, y, rows, make_fresh, fresh_labels, epochs: int | None) -> EpochBatches:
    """The EpochBatches the `train` params give over the training `rows`; only aligned channels are ever flipped."""
    flips = params["flip_aligned"] and x.shape[-1] > RGB
    return EpochBatches(x[rows], y[rows], params["batch_size"], params["seed"], make_fresh, fresh_labels, epochs, flips)
