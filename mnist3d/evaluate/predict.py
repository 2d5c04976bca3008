"""Classify new samples with a trained model: vectors files, point clouds or voxel grids, as the pipeline saw them.

mnist3d.io.formats reads every input as flat voxel vectors (N, 4096) in [0, 1] or as point clouds, which are
voxelised here as the dataset was built, as they are: not normalised or rotated. Then the vectors go through
mnist3d.features.inputs.network_inputs with the `preprocess` params, exactly as the preprocess stage built the
training grids, and through the model.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mnist3d.data.voxels import voxelise_batch
from mnist3d.errors import PipelineError
from mnist3d.evaluate.tta import block_rows, predict_blocks
from mnist3d.features.inputs import network_inputs
from mnist3d.io.files import atomic_path, check_writable, file_kind
from mnist3d.io.formats import Samples, read_input
from mnist3d.train.model import BuiltWith, load_trained

DEFAULT_MODEL = Path("models/model.keras")
TOP = 3  # classes shown per sample
CSV_COLUMNS = ["index", "predicted", *(f"top{k}{part}" for k in range(1, TOP + 1) for part in ("", "_probability"))]
CSV_COLUMNS.append("actual")  # the label, where the input has one (a vectors or point-cloud .h5)


def vector_blocks(samples: Samples, rows: int) -> Iterator[np.ndarray]:
    """The samples as flat voxel vectors, `rows` at a time: point clouds are voxelised a block at a time, exactly as
    the dataset was, so memory does not grow with the number of clouds."""
    if samples.vectors is not None:
        yield from (samples.vectors[start : start + rows] for start in range(0, len(samples.vectors), rows))
    else:
        yield from (
            voxelise_batch(samples.clouds[start : start + rows]) for start in range(0, len(samples.clouds), rows)
        )


def check_csv_target(target: str | os.PathLike, protected: list[str | os.PathLike]) -> None:
    """Refuse a --csv path that is not a regular file or is one of `protected` (the input, the model, params)."""
    target = Path(target)
    kind = file_kind(target)
    if kind == "directory":
        raise PipelineError(f"--csv {target} is a directory; name a file such as {target / 'predictions.csv'}")
    if kind == "other":
        raise PipelineError(f"--csv {target} is not a regular file (a pipe, socket or device); name a .csv file")
    for path in protected:
        if kind == "file" and file_kind(path) == "file" and os.path.samefile(target, path):
            raise PipelineError(f"--csv {target} would write over {path}; name a separate .csv file")
    check_writable(target)  # a file standing where one of its folders must be


# ---- predicting and formatting --------------------------------------------------------------------------------


def params_disagree(params: dict, built: BuiltWith, params_path: str | os.PathLike) -> str:
    """What params.yaml says that differs from what the model was built with, for the header line; "" if nothing."""
    today = {**params["preprocess"], "tta_views": params["evaluate"]["tta_views"]}
    differ = [f"{key} {today[key]}" for key in ("colormap", "align", "tta_views") if today[key] != getattr(built, key)]
    return f"; {params_path} has {', '.join(differ)}, but the model's own are used" if differ else ""


def top_classes(probabilities: np.ndarray, k: int = TOP) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of each row, most probable first, and their probabilities."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)


def format_lines(samples: Samples, probabilities: np.ndarray) -> list[str]:
    """One line per sample: its row, the predicted class, the top-3 probabilities and the label if known."""
    classes, top = top_classes(probabilities)
    lines = []
    for i, index in enumerate(samples.index):
        ranked = ", ".join(f"{c} {p:.3f}" for c, p in zip(classes[i], top[i], strict=True))
        actual = "" if samples.labels is None else f"  (actual {samples.labels[i]})"
        lines.append(f"row {index}: predicted {classes[i, 0]}  top-{TOP}: {ranked}{actual}")
    if samples.labels is not None and len(samples.index) > 1:
        correct = int((classes[:, 0] == samples.labels).sum())
        lines.append(f"accuracy {correct / len(samples.index):.4f} ({correct} of {len(samples.index)} correct)")
    return lines


def write_csv(target: str | os.PathLike, samples: Samples, probabilities: np.ndarray) -> None:
    """Write one row per sample (CSV_COLUMNS), atomically: the file appears only when complete."""
    classes, top = top_classes(probabilities)
    with atomic_path(target) as temp, open(temp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for i, index in enumerate(samples.index):
            ranked = [value for c, p in zip(classes[i], top[i], strict=True) for value in (int(c), f"{p:.6f}")]
            actual = "" if samples.labels is None else int(samples.labels[i])
            writer.writerow([int(index), int(classes[i, 0]), *ranked, actual])


def predict_file(
    path: str | os.PathLike,
    model_path: str | os.PathLike = DEFAULT_MODEL,
    split: str = "test",
    row: int | None = None,
    csv_path: str | os.PathLike | None = None,
    params_path: str | os.PathLike | None = None,
) -> list[str]:
    """Read, check and classify one input file; write the CSV if asked; return the lines to print."""
    from mnist3d.params import PARAMS_FILE, load_params
    from mnist3d.runtime import prepare_tensorflow

    params_path = params_path or PARAMS_FILE
    params = load_params(params_path)  # checks the whole file, as every stage does
    if csv_path is not None:
        check_csv_target(csv_path, [path, model_path, DEFAULT_MODEL, params_path, PARAMS_FILE])
    samples = read_input(path, split, row)  # checked before the slow model load
    prepare_tensorflow()
    model, built = load_trained(model_path)
    # The inputs the model was trained on, whatever params.yaml says today: the same network_inputs as preprocess,
    # built and classified a block at a time.
    batch_size = params["evaluate"]["batch_size"]
    grid_blocks = (
        network_inputs(vectors, built.colormap, built.align)
        for vectors in vector_blocks(samples, block_rows(batch_size))
    )
    probabilities = predict_blocks(model, grid_blocks, built.tta_views, batch_size, model_path)
    lines = [
        f"predict: {samples.description} through {model_path} (colormap {built.colormap}, align {built.align}, "
        f"{built.tta_views} view(s){params_disagree(params, built, params_path)})",
        *format_lines(samples, probabilities),
    ]
    if csv_path is not None:
        write_csv(csv_path, samples, probabilities)
        lines.append(f"predict: wrote {len(samples.index)} row(s) to {csv_path}")
    return lines
