"""The batch sources: each epoch's shuffled training grids with its fresh copies, and the validation batches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Batches one epoch after another: the fixed training grids plus, with augmentation, fresh copies.

    Each epoch's fresh copies and order come from a generator seeded by (seed, epoch), so runs repeat
    exactly; the next epoch is prepared on a worker thread while the current one trains, up to `epochs`.
    One stream serves every epoch (`dataset`), so fit opens one iterator for the whole run instead of one an epoch.
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
        self.epochs = epochs  # how many fit will ask for (None: no end)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._prepared: dict[int, Future] = {}
        self._prepare(0)

    def _prepare(self, epoch: int) -> Future:
        """The epoch's fresh copies, order and flips, made on the worker thread (once, however often asked for)."""
        if epoch not in self._prepared:
            self._prepared[epoch] = self._pool.submit(self._make, epoch)
        return self._prepared[epoch]

    def _make(self, epoch: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        rng = np.random.default_rng([self.seed, epoch])
        fresh = self.make_fresh(rng) if self.make_fresh else None
        order = rng.permutation(self.size)
        return fresh, order, rng.integers(len(ALIGNED_FLIPS), size=self.size) if self.flip_aligned else None

    def steps(self) -> int:
        """Batches per epoch."""
        return -(-self.size // self.batch_size)

    def batches_of(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield epoch `epoch`'s (grids, one-hot labels) batches, while the next epoch is prepared."""
        fresh, order, flips = self._prepare(epoch).result()
        for done in [number for number in self._prepared if number < epoch]:
            del self._prepared[done]  # an epoch's fresh copies are hundreds of MB
        # The last epoch prepares nothing more: that work would only compete with its training.
        if self.epochs is None or epoch + 1 < self.epochs:
            self._prepare(epoch + 1)
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

    def __call__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every epoch's batches in one stream, from the first: up to `epochs`, or for ever without. Each call starts
        a stream of its own (a distribution strategy may open one just to look at a batch)."""
        for epoch in itertools.count() if self.epochs is None else range(self.epochs):
            yield from self.batches_of(epoch)

    def dataset(self) -> Any:
        """This source as one prefetching tf.data stream; fit takes steps() batches of it per epoch."""
        import tensorflow as tf

        spec = (
            tf.TensorSpec((None, *self.x.shape[1:]), tf.float32),
            tf.TensorSpec((None, NUM_CLASSES), tf.float32),
        )
        return tf.data.Dataset.from_generator(self, output_signature=spec).prefetch(2)


def epoch_batches(params: dict[str, Any], x, y, rows, make_fresh, fresh_labels, epochs: int | None) -> EpochBatches:
    """The EpochBatches the `train` params give over the training `rows`; only aligned channels are ever flipped."""
    flips = params["flip_aligned"] and x.shape[-1] > RGB
    return EpochBatches(x[rows], y[rows], params["batch_size"], params["seed"], make_fresh, fresh_labels, epochs, flips)
