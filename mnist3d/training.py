"""Input pipelines and the training loop, kept apart from the stage script so they can be tested."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist3d import NUM_CLASSES


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic, so equal params give equal metrics."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def split_pairs(count: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, splitting whole (original, rotated) pairs so no digit is in both."""
    pairs = np.random.default_rng(seed).permutation(count // 2)
    held_out = max(1, round(len(pairs) * validation_split))
    if held_out >= len(pairs):
        raise ValueError("validation_split leaves no training pairs")
    rows = np.stack([2 * pairs, 2 * pairs + 1], axis=1)
    return np.sort(rows[held_out:].ravel()), np.sort(rows[:held_out].ravel())


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> Any:
    """A batched tf.data pipeline of (voxels, one-hot label); shuffled each epoch when a seed is given."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda voxels, label: (voxels, tf.one_hot(label, NUM_CLASSES)), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def compile_model(model: Any, learning_rate: float) -> None:
    """Adam with categorical cross-entropy, as in the notebook."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def summarise_history(history: dict[str, list[float]]) -> dict[str, Any]:
    """Final and best train/validation accuracy and loss from a Keras history dict."""
    best = int(np.argmax(history["val_accuracy"]))
    return {
        "epochs": len(history["loss"]),
        "final": {key: float(values[-1]) for key, values in history.items()},
        "best": {"epoch": best + 1, **{key: float(values[best]) for key, values in history.items()}},
    }
