"""The fit loop: seeded and deterministic, built under the distribution strategy, scored on the validation pairs."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from mnist3d.errors import PipelineError, quiet_native_stderr
from mnist3d.io.processed import Clouds
from mnist3d.metrics import evaluate_predictions
from mnist3d.train.augment import fresh_copies
from mnist3d.train.batches import epoch_batches, make_dataset
from mnist3d.train.optimiser import compile_from_params
from mnist3d.train.replicas import distribution_strategy, share_batch_statistics
from mnist3d.train.split import split_pairs


def check_finite(model: Any, history: dict[str, list[float]], model_path: Any) -> None:
    """Refuse a model whose training loss or weights stopped being finite, naming the epoch where the loss did."""
    losses = history.get("loss", [])
    broken = next((epoch for epoch, loss in enumerate(losses, start=1) if not math.isfinite(loss)), None)
    fix = f"{model_path} was not written (one already there stays as it was): lower train.learning_rate"
    if broken is not None:
        raise PipelineError(f"the training loss stopped being finite in epoch {broken} ({losses[broken - 1]}); {fix}")
    if not all(np.isfinite(weights).all() for weights in model.get_weights()):
        raise PipelineError(f"training left weights that are NaN or Inf; {fix}")


def stop_when_loss_not_finite(model: Any) -> Any:
    """A callback that ends training after the first epoch whose loss is NaN or Inf: the rest could not recover."""
    import keras

    def check(epoch: int, logs: dict | None) -> None:
        if not math.isfinite((logs or {}).get("loss", 0.0)):
            model.stop_training = True

    return keras.callbacks.LambdaCallback(on_epoch_end=check)


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TF ops deterministic, so equal params give equal metrics."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


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
        steps_per_epoch=batches.steps(),  # the stream runs on across epochs: one iterator for the whole fit
        shuffle=False,  # EpochBatches shuffles each epoch itself; Keras would only warn that it can't
        callbacks=[*callbacks, stop_when_loss_not_finite(model)],
        verbose=1 if sys.stdout.isatty() else 2,  # one line per epoch in logs
    )
    # Scored by a plain copy: a model made under multi_worker would wait for the other hosts to predict too.
    with quiet_native_stderr():
        scorer = build_model(architecture, input_shape=x.shape[1:])
        scorer.set_weights(model.get_weights())
        validation = evaluate_predictions(y[val_rows], scorer.predict(x[val_rows], batch_size=256, verbose=0))
    return model, history.history, {k: validation[k] for k in ("accuracy", "accuracy_original", "accuracy_rotated")}
