"""The Conv3D classifier, built from an architecture preset in params.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mnist3d import GRID, NUM_CLASSES
from mnist3d.errors import PipelineError, quiet_native_stderr

INPUT_SHAPE = (GRID, GRID, GRID, 3)


def build_model(architecture: dict[str, Any], input_shape: tuple[int, ...] = INPUT_SHAPE) -> Any:
    """A functional Keras model: conv blocks, each ending in MaxPool3D(2), then the head.

    The `seed` preset ([[32], [64], [128], [256]], flatten, dense 128, dropout 0.5) is the notebook's model.
    """
    import keras
    from keras import layers

    batch_norm = architecture["batch_norm"]
    inputs = keras.Input(shape=input_shape, name="voxels")
    x = inputs
    for block, filters_list in enumerate(architecture["blocks"], start=1):
        for conv, filters in enumerate(filters_list, start=1):
            name = f"block{block}_conv{conv}"
            last = conv == len(filters_list)
            # With BatchNorm after it, a conv bias is redundant.
            x = layers.Conv3D(filters, architecture["kernel_size"], padding="same", use_bias=not batch_norm, name=name)(
                x
            )
            if last and batch_norm:
                # Pooling first lets BatchNorm and ReLU, memory-bound on this CPU, work on an eighth of the voxels:
                # at 16^3 that halves the first block's training time.
                x = layers.MaxPool3D(pool_size=2, name=f"block{block}_pool")(x)
            if batch_norm:
                # momentum 0.9: the moving statistics settle within tens of steps, so short runs evaluate sanely
                x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
            x = layers.Activation("relu", name=f"{name}_relu")(x)
            if last and not batch_norm:
                x = layers.MaxPool3D(pool_size=2, name=f"block{block}_pool")(x)
    x = (
        layers.Flatten(name="flatten")(x)
        if architecture["head"] == "flatten"
        else layers.GlobalAveragePooling3D(name="pool")(x)
    )
    if architecture["dense_units"]:
        x = layers.Dense(architecture["dense_units"], activation="relu", name="dense")(x)
    if architecture["dropout"]:
        x = layers.Dropout(architecture["dropout"], name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="digit")(x)
    return keras.Model(inputs, outputs, name="conv3d_mnist")


def check_model_inputs(
    model: Any, model_path: str | os.PathLike, shape: tuple[int, ...], source: str, fix: str
) -> None:
    """Refuse a model whose inputs are not grids of `shape`, the shape that `source` gives; `fix` says what to do."""
    expected = tuple(getattr(model, "input_shape", (None,))[1:])
    if expected != tuple(shape):
        raise PipelineError(f"{model_path} expects grids of shape {expected} but {source} gives {tuple(shape)}; {fix}")


def load_model(path: str | os.PathLike) -> Any:
    """Load a saved .keras model in safe mode; a missing, damaged or unsafe file is a PipelineError."""
    path = Path(path)
    if not path.is_file():  # before importing TensorFlow, which takes seconds
        raise PipelineError(f"{path} not found; run the train stage first (dvc repro train)")
    with quiet_native_stderr():
        import keras

        try:
            return keras.saving.load_model(path, safe_mode=True)
        except Exception as error:  # Keras raises many types for a damaged archive; all mean the same to a person
            if "safe_mode" in str(error):  # Keras refuses to deserialise code (a Lambda layer) in safe mode
                raise PipelineError(
                    f"{path} holds code (a Lambda layer), which safe mode refuses to load; "
                    "only load models you trained, retrain with: dvc repro --force train"
                ) from None
            raise PipelineError(
                f"{path} is not a loadable Keras model ({type(error).__name__}); retrain with: dvc repro --force train"
            ) from None
