"""The Conv3D classifier, built from an architecture preset in params.yaml."""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist3d import GRID, NUM_CLASSES
from mnist3d.errors import PipelineError, quiet_native_stderr
from mnist3d.features.inputs import input_channels
from mnist3d.io.files import regular_file

INPUT_SHAPE = (GRID, GRID, GRID, 3)
BATCH_NORM_MOMENTUM = 0.9  # fixed, not a param: docs/params.md lists the constants that are


def build_model(architecture: dict[str, Any], input_shape: tuple[int, ...] = INPUT_SHAPE) -> Any:
    """A functional Keras model: conv blocks, each ending in MaxPool3D(2), then the head.

    The `seed` preset ([[32], [64], [128], [256]], flatten, dense 128, dropout 0.5) is the notebook's model.
    """
    import keras
    from keras import layers

    batch_norm = architecture["batch_norm"]
    pool_first = batch_norm and architecture.get("pool_before_norm", True)  # the optional key's default
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
            if last and pool_first:
                # Pooling first lets BatchNorm and ReLU, memory-bound on a CPU, work on an eighth of the voxels:
                # at 16^3 that halves the first block's training time.
                x = layers.MaxPool3D(pool_size=2, name=f"block{block}_pool")(x)
            if batch_norm:
                # momentum 0.9: the moving statistics settle within tens of steps, so short runs evaluate sanely
                x = layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"{name}_bn")(x)
            x = layers.Activation("relu", name=f"{name}_relu")(x)
            if last and not pool_first:
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


@dataclass(frozen=True)
class BuiltWith:
    """What a model's inputs were built with, saved inside it so that nothing downstream guesses from today's params."""

    colormap: str  # preprocess.colormap
    align: str  # preprocess.align
    tta_views: int  # evaluate.tta_views: the cube rotations its predictions are averaged over


METADATA = "metadata.json"  # Keras's own record of the save inside the .keras zip; Keras never reads it back
METADATA_KEY = "mnist3d"
MAX_METADATA_BYTES = 64 << 10  # Keras writes ~100 bytes, we add ~80
RETRAIN = "retrain it with: dvc repro --force train"


def save_model(model: Any, path: str | os.PathLike, built_with: BuiltWith) -> None:
    """Save as a .keras file whose metadata.json also holds `built_with`."""
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            if info.filename == METADATA:
                data = json.dumps({**json.loads(data), METADATA_KEY: asdict(built_with)}).encode()
            archive.writestr(info, data)


def read_built_with(path: str | os.PathLike) -> BuiltWith:
    """What the .keras file at `path` was built with, each value checked as params.yaml's are; read without Keras."""
    from mnist3d.params import SCHEMAS

    path = regular_file(path, "run the train stage first (dvc repro train)")
    recorded = None
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA in archive.namelist():
                info = archive.getinfo(METADATA)
                if info.file_size > MAX_METADATA_BYTES:
                    raise PipelineError(f"{path}: its {METADATA} declares {info.file_size:,} bytes; {RETRAIN}")
                with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not a mapping
                    recorded = json.loads(archive.read(info)).get(METADATA_KEY)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise PipelineError(f"{path} is not a loadable Keras model ({type(error).__name__}); {RETRAIN}") from None
    checks = {**SCHEMAS["preprocess"], "tta_views": SCHEMAS["evaluate"]["tta_views"]}
    if not isinstance(recorded, dict) or set(recorded) != set(checks) or any(checks[k](recorded[k]) for k in checks):
        raise PipelineError(
            f"{path} does not record the colormap, alignment and views its inputs were built with "
            f"(saved by an older version or another program); {RETRAIN}"
        )
    return BuiltWith(**recorded)


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


def load_trained(path: str | os.PathLike) -> tuple[Any, BuiltWith]:
    """The model at `path` and what it was built with, checked against each other and the 10 digits.

    The record is read first, before TensorFlow starts.
    """
    built_with = read_built_with(path)
    model = load_model(path)
    shape = (GRID, GRID, GRID, input_channels(built_with.align))
    check_model_inputs(model, path, shape, f"its recorded align {built_with.align}", RETRAIN)
    classes = getattr(model, "output_shape", (None,))[-1]
    if classes != NUM_CLASSES:
        raise PipelineError(f"{path} outputs {classes} classes, not the {NUM_CLASSES} digits; {RETRAIN}")
    return model, built_with
