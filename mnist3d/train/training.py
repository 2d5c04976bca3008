"""Input pipelines and the training loop, kept apart from the stage script so they can be tested."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mnist3d import NUM_CLASSES
from mnist3d.errors import PipelineError, quiet_native_stderr
from mnist3d.features.symmetry import ALIGNED_FLIPS, RGB, flip_aligned
from mnist3d.io.processed import Clouds, read_clouds
from mnist3d.io.schema import check_cloud_labels
from mnist3d.metrics import evaluate_predictions
from mnist3d.train.replicas import distribution_strategy, share_batch_statistics


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
        raise PipelineError(
            f"params.yaml: train.validation_split {validation_split} holds out all {len(pairs)} "
            "(original, rotated) pairs of the training data; lower it"
        )
    rows = np.stack([2 * pairs, 2 * pairs + 1], axis=1)
    return np.sort(rows[held_out:].ravel()), np.sort(rows[:held_out].ravel())


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


def compile_model(
    model: Any,
    learning_rate: float,
    label_smoothing: float = 0.0,
    schedule: str = "constant",
    total_steps: int = 1,
    ema: float = 0.0,
) -> None:
    """Adam with categorical cross-entropy, as in the notebook; optionally label smoothing, a cosine decay and an
    exponential moving average of the weights (momentum `ema`), which replaces the weights when training ends."""
    import keras

    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps, alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, use_ema=ema > 0, ema_momentum=ema or 0.99),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def compile_from_params(model: Any, params: dict[str, Any], total_steps: int) -> None:
    """compile_model with the `train` params' rate, smoothing, schedule (over `total_steps`) and weight averaging."""
    compile_model(
        model, params["learning_rate"], params["label_smoothing"], params["schedule"], total_steps, params["ema"]
    )


def epoch_batches(params: dict[str, Any], x, y, rows, make_fresh, fresh_labels, epochs: int | None) -> EpochBatches:
    """The EpochBatches the `train` params give over the training `rows`; only aligned channels are ever flipped."""
    flips = params["flip_aligned"] and x.shape[-1] > RGB
    return EpochBatches(x[rows], y[rows], params["batch_size"], params["seed"], make_fresh, fresh_labels, epochs, flips)


def summarise_history(history: dict[str, list[float]]) -> dict[str, Any]:
    """What a sweep compares: epochs run, the last validation accuracy and loss, the epoch of the best accuracy."""
    best = int(np.argmax(history["val_accuracy"]))
    return {
        "epochs": len(history["val_accuracy"]),
        "final": {"val_accuracy": float(history["val_accuracy"][-1]), "val_loss": float(history["val_loss"][-1])},
        "best": {"epoch": best + 1, "val_accuracy": float(history["val_accuracy"][best])},
    }


def fresh_copies(
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    train_rows: np.ndarray,
    clouds: Clouds | None,
    preprocess: dict[str, Any],
):
    """The per-epoch maker of extra training grids for `train.augment`, and their labels; (None, None) for none.

    `clouds` makes `copies_per_epoch` fresh rotated, noisy copies of each training cloud per epoch (cloud i made
    rows 2i and 2i+1), and `upright_copies` unrotated ones, each digit first turned and slanted in its plane (the
    `jitter_*` params); `cube` turns the dataset's rotated rows by random cube symmetries.
    """
    from mnist3d.features.inputs import network_inputs
    from mnist3d.train.augment import RotatedCopies, random_symmetries

    if params["augment"] == "none":
        return None, None
    cloud_ids = train_rows[train_rows % 2 == 0] // 2
    if params["augment"] == "clouds":
        makers = [
            RotatedCopies(clouds, np.tile(cloud_ids, count), params["jitter_degrees"], params["jitter_slant"], upright)
            for count, upright in ((params["copies_per_epoch"], False), (params["upright_copies"], True))
            if count
        ]
        colormap, aligned = preprocess["colormap"], preprocess["align"]

        def make(rng: np.random.Generator) -> np.ndarray:
            return network_inputs(np.concatenate([maker(rng) for maker in makers]), colormap, aligned)

        return make, clouds.labels[np.concatenate([maker.ids for maker in makers])]
    rotated = x[2 * np.tile(cloud_ids, params["copies_per_epoch"]) + 1]
    return (lambda rng: random_symmetries(rotated, rng)), y[2 * np.tile(cloud_ids, params["copies_per_epoch"]) + 1]


def clouds_for(params: dict[str, Any], points_path: Any, index_path: Any, y: np.ndarray) -> Clouds | None:
    """The clouds the `train` params need: read and checked when `augment` is clouds, else None."""
    return read_training_clouds(points_path, index_path, y) if params["augment"] == "clouds" else None


def read_training_clouds(points_path: Any, index_path: Any, y: np.ndarray) -> Clouds:
    """The clouds `train.augment: clouds` re-rotates, checked against the training labels' pairs."""
    clouds = read_clouds(points_path, index_path)
    if not len(clouds):
        raise PipelineError(
            "train.augment is clouds, but the data has no point clouds to rotate (the source gave only vectors); "
            "augment with cube symmetries instead: dvc exp run -S train.augment=cube"
        )
    check_cloud_labels(clouds.labels, y, str(index_path))
    return clouds


def fit(
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    architecture: dict[str, Any],
    epochs: int,
    clouds: Clouds | None,
    preprocess: dict[str, Any],
    callbacks: list | tuple = (),
    strategy: Any = None,
) -> tuple[Any, dict[str, list[float]], dict[str, float]]:
    """Build and train a model from the `train` params on preprocessed grids.

    Returns the model, its history and its validation accuracy on each half. `strategy` defaults to the one
    `train.distribute` names; multi_worker's must be made before any TF op."""
    from mnist3d.train.model import build_model

    train_rows, val_rows = split_pairs(len(y), params["validation_split"], params["seed"])
    make_fresh, fresh_labels = fresh_copies(params, x, y, train_rows, clouds, preprocess)
    batches = epoch_batches(params, x, y, train_rows, make_fresh, fresh_labels, epochs)
    # TensorFlow's C++ lines as it first touches the devices (cuInit on a machine without GPU) would bury ours.
    with quiet_native_stderr():
        make_deterministic(params["seed"])
        val_data = make_dataset(x[val_rows], y[val_rows], params["batch_size"])
        strategy = distribution_strategy(params["distribute"]) if strategy is None else strategy
        with strategy.scope():  # variables must be created under the strategy to be mirrored
            model = build_model(architecture, input_shape=x.shape[1:])
            share_batch_statistics(model, strategy)
            compile_from_params(model, params, epochs * batches.steps())
    print(
        f"train: {batches.size} samples per epoch ({len(train_rows)} fixed, augment={params['augment']}), "
        f"{len(val_rows)} validation, {model.count_params():,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s)",
        flush=True,
    )
    if params["ema"]:
        import keras  # so that each epoch's validation scores the averaged weights that will be saved

        callbacks = [keras.callbacks.SwapEMAWeights(), *callbacks]
    history = model.fit(
        batches.dataset(),
        validation_data=val_data,
        epochs=epochs,
        shuffle=False,  # EpochBatches shuffles each epoch itself; Keras would only warn that it can't
        callbacks=list(callbacks),
        verbose=1 if sys.stdout.isatty() else 2,  # one line per epoch in logs
    )
    # Scored by a plain copy: a model made under multi_worker would wait for the other hosts to predict too.
    with quiet_native_stderr():
        scorer = build_model(architecture, input_shape=x.shape[1:])
        scorer.set_weights(model.get_weights())
        validation = evaluate_predictions(y[val_rows], scorer.predict(x[val_rows], batch_size=256, verbose=0))
    return model, history.history, {k: validation[k] for k in ("accuracy", "accuracy_original", "accuracy_rotated")}
