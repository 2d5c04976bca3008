"""Classify new samples with a trained model: vectors files, point clouds or voxel grids, as the pipeline saw them.

Every input becomes flat voxel vectors (N, 4096) in [0, 1], then goes through mnist3d.inputs.network_inputs with
the `preprocess` params, exactly as the preprocess stage built the training grids. A point cloud is voxelised with
mnist3d.voxels.voxelise as the dataset was built, as is: it is not normalised or rotated first.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist3d import GRID, NUM_CLASSES, VOXELS
from mnist3d.errors import PipelineError
from mnist3d.files import atomic_path
from mnist3d.inputs import network_inputs
from mnist3d.vectors import SPLITS, finite_bounds
from mnist3d.voxels import voxelise_batch

DEFAULT_MODEL = Path("models/model.keras")
TOP = 3  # classes shown per sample
CSV_COLUMNS = ["index", "predicted", *(f"top{k}{part}" for k in range(1, TOP + 1) for part in ("", "_probability"))]
CSV_COLUMNS.append("actual")  # the label, where the input has one (a vectors or point-cloud .h5)
GRID_SHAPE = (GRID, GRID, GRID)
SHAPES_HELP = (
    f"expected a point cloud (N, 3), a voxel grid {GRID_SHAPE} or ({VOXELS},), "
    f"or a batch (N, {GRID}, {GRID}, {GRID}) or (N, {VOXELS})"
)
PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class Samples:
    """What to classify: flat voxel vectors (N, 4096), their row numbers in the source, and labels if known."""

    vectors: np.ndarray
    index: np.ndarray
    labels: np.ndarray | None
    description: str  # what was read, for the summary line


# ---- reading and checking -------------------------------------------------------------------------------------


def check_vectors(x: np.ndarray, name: str) -> None:
    """Raise a PipelineError naming `name` unless x is finite (N, 4096) voxel vectors in [0, 1], no row all zeros."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise PipelineError(f"{name}: values have dtype {x.dtype}, expected numbers; save the grid as floats")
    if x.ndim != 2 or x.shape[1] != VOXELS or len(x) == 0:
        raise PipelineError(f"{name}: shape {x.shape}, {SHAPES_HELP}")
    bounds = finite_bounds(x)
    if bounds is None:
        raise PipelineError(f"{name}: holds NaN or Inf values; replace them with voxel values in [0, 1]")
    low, high = bounds
    if low < 0 or high > 1:
        raise PipelineError(
            f"{name}: values must lie in [0, 1], found {low:.3g}..{high:.3g}; divide each grid by its maximum"
        )
    empty = np.flatnonzero(x.max(axis=1) == 0)
    if len(empty):
        raise PipelineError(f"{name}: row {empty[0]} is all zeros, nothing to classify; drop it or pass a real grid")


def check_cloud(points: np.ndarray, name: str) -> None:
    """Raise a PipelineError naming `name` unless points is a finite, non-empty (N, 3) array of numbers."""
    if not np.issubdtype(points.dtype, np.number):
        raise PipelineError(f"{name}: values have dtype {points.dtype}, expected numbers; save x y z as floats")
    if points.ndim != 2 or points.shape[1] != 3:
        raise PipelineError(f"{name}: point cloud has shape {points.shape}, expected (N, 3): one x y z row per point")
    if len(points) == 0:
        raise PipelineError(f"{name}: the point cloud has no points; pass a file with at least one x y z row")
    if not np.isfinite(points).all():
        raise PipelineError(f"{name}: the point cloud holds NaN or Inf coordinates; remove those points")


def cloud_vectors(clouds: list[np.ndarray]) -> np.ndarray:
    """Voxel vectors (N, 4096) of point clouds, binned exactly as the dataset was (mnist3d.voxels), not normalised."""
    return voxelise_batch([np.asarray(c, dtype=np.float64) for c in clouds])


def read_text_cloud(path: Path) -> np.ndarray:
    """An (N, 3) cloud from text: one point per line, separated by spaces, tabs or commas; `#` starts a comment."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise PipelineError(f"{path} is not a text file; save the cloud as x y z lines, .npy or .ply") from None
    try:
        points = np.loadtxt(io.StringIO(text.replace(",", " ")), dtype=np.float64, ndmin=2, comments="#")
    except ValueError as error:
        raise PipelineError(
            f"{path} is not a table of numbers ({error}); write one 'x y z' point per line, comment out any header with #"
        ) from None
    check_cloud(points, str(path))
    return points


def _ply_header(data: bytes, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """The PLY format, its elements as (name, count, [(property, type)]), and the offset of the body."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise PipelineError(f"{path} is not a PLY file (it must start with 'ply' and have 'end_header')")
    body = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    fmt, elements = None, []
    for number, raw in enumerate(data[:end].decode("ascii", "replace").splitlines()[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        bad = PipelineError(f"{path}: bad PLY header line {number} {raw.strip()!r}; fix or re-export the file")
        if words[0] == "format":
            if len(words) < 2 or words[1] not in PLY_FORMATS:
                raise bad
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise bad
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements or len(words) < 3:
                raise bad
            if words[1] == "list":
                elements[-1][2].append((words[-1], "list"))
            elif words[1] in PLY_TYPES and len(words) == 3:
                elements[-1][2].append((words[2], words[1]))
            else:
                raise bad
        else:
            raise bad
    if fmt is None:
        raise PipelineError(f"{path}: the PLY header has no 'format' line; re-export the file")
    return fmt, elements, body


def read_ply(path: Path) -> np.ndarray:
    """The x y z vertices of an ASCII or binary PLY file as (N, 3); other elements (faces) are ignored."""
    data = path.read_bytes()
    fmt, elements, offset = _ply_header(data, path)
    names = [name for name, _, _ in elements]
    if "vertex" not in names:
        raise PipelineError(f"{path}: the PLY header has no 'element vertex'; export the points as vertices")
    before = elements[: names.index("vertex")]
    _, count, properties = elements[names.index("vertex")]
    columns = [p for p, _ in properties]
    if not {"x", "y", "z"} <= set(columns):
        raise PipelineError(f"{path}: the PLY vertices have properties {columns}, need x, y and z")
    if PLY_FORMATS[fmt] is None:
        lines = data[offset:].decode("ascii", "replace").splitlines()
        lines = lines[sum(n for _, n, _ in before) :][:count]
        rows = [line.split() for line in lines]
        if len(rows) < count or any(len(r) != len(columns) for r in rows):
            raise PipelineError(
                f"{path}: expected {count} vertex lines of {len(columns)} values after the header; the file is cut short or damaged"
            )
        try:
            table = np.array(rows, dtype=np.float64)
        except ValueError:
            raise PipelineError(
                f"{path}: a vertex line holds something that is not a number; re-export the file"
            ) from None
        points = table[:, [columns.index(axis) for axis in "xyz"]]
    else:
        if any(kind == "list" for _, _, props in [*before, elements[names.index("vertex")]] for _, kind in props):
            raise PipelineError(
                f"{path}: binary PLY with list properties before or in the vertices is not supported; save it as ASCII PLY"
            )
        order = PLY_FORMATS[fmt]
        for _, n, props in before:
            offset += n * np.dtype([(p, order + PLY_TYPES[t]) for p, t in props]).itemsize
        dtype = np.dtype([(p, order + PLY_TYPES[t]) for p, t in properties])
        if len(data) < offset + count * dtype.itemsize:
            raise PipelineError(f"{path}: the file ends before its {count} vertices; it is cut short, export it again")
        table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        points = np.stack([table[axis].astype(np.float64) for axis in "xyz"], axis=1)
    check_cloud(points, str(path))
    return points


def read_npy(path: Path) -> tuple[np.ndarray, bool]:
    """An .npy array, and whether it is a point cloud (N, 3) rather than voxel grids."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise PipelineError(f"{path} is not a readable .npy array ({error}); save it with numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise PipelineError(f"{path} holds several arrays; save one array with numpy.save")
    if array.ndim == 2 and array.shape[1] == 3:
        check_cloud(array, str(path))
        return array, True
    if array.shape in (GRID_SHAPE, (VOXELS,)):
        return array.reshape(1, VOXELS), False
    if (array.ndim == 4 and array.shape[1:] == GRID_SHAPE) or (array.ndim == 2 and array.shape[1] == VOXELS):
        return array.reshape(len(array), VOXELS), False
    raise PipelineError(f"{path}: shape {array.shape}, {SHAPES_HELP}")


def _pick(count: int, row: int | None, path: Path) -> np.ndarray:
    """The row numbers to classify: all of them, or the one that --row names."""
    if row is None:
        return np.arange(count)
    if not 0 <= row < count:
        raise PipelineError(f"{path}: --row {row} is out of range, the input has {count} row(s): use 0..{count - 1}")
    return np.array([row])


def _read_h5(path: Path, split: str, row: int | None) -> Samples:
    """A vectors file in the Kaggle schema (X_<split>, y_<split>), or a Kaggle point-cloud file (groups of points)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if f"X_{split}" in h5:
                x = h5[f"X_{split}"]
                if x.ndim != 2 or x.shape[1] != VOXELS:
                    raise PipelineError(f"{path}: X_{split} has shape {x.shape}, expected (N, {VOXELS})")
                rows = _pick(len(x), row, path)
                vectors = np.asarray(x[rows[0] : rows[-1] + 1] if row is not None else x[()])
                labels = None
                if f"y_{split}" in h5 and h5[f"y_{split}"].shape == (len(x),):
                    labels = np.asarray(h5[f"y_{split}"][()])[rows]
                check_vectors(vectors, f"{path} X_{split}")
                return Samples(vectors, rows, labels, f"{path} X_{split}, {len(rows)} row(s)")
            if "0" in h5 and isinstance(h5["0"], h5py.Group) and "points" in h5["0"]:
                rows = _pick(len(h5), row, path)
                clouds, labels = [], []
                for i in rows:
                    group = h5.get(str(i))
                    if group is None or "points" not in group:
                        raise PipelineError(f"{path}: group {i} has no points; is this a 3D MNIST point-cloud file?")
                    clouds.append(np.asarray(group["points"]))
                    check_cloud(clouds[-1], f"{path} group {i}")
                    labels.append(int(group.attrs.get("label", -1)))
                labels = np.array(labels) if min(labels) >= 0 else None
                return Samples(cloud_vectors(clouds), rows, labels, f"{path} point clouds, {len(rows)} cloud(s)")
            raise PipelineError(
                f"{path}: no X_{split} dataset and no point-cloud groups; pass full_dataset_vectors.h5 or a point-cloud .h5"
            )
    except PipelineError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise PipelineError(f"{path} is not a readable HDF5 file ({error}); check the path or fetch it again") from None


def read_samples(path: str | os.PathLike, split: str = "test", row: int | None = None) -> Samples:
    """Read and check any supported input: .h5, .npy (cloud or grids), .txt/.csv/.xyz (cloud) or .ply (cloud)."""
    path = Path(path)
    if split not in SPLITS:
        raise PipelineError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not path.is_file():
        raise PipelineError(f"{path} not found; check the path of the file to classify")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path, split, row)
    if suffix == ".npy":
        array, is_cloud = read_npy(path)
        if is_cloud:
            rows = _pick(1, row, path)
            return Samples(cloud_vectors([array]), rows, None, f"{path}, a point cloud of {len(array)} points")
        rows = _pick(len(array), row, path)
        vectors = array[rows]
        check_vectors(vectors, str(path))
        return Samples(vectors.astype(np.float64), rows, None, f"{path}, {len(rows)} voxel grid(s)")
    if suffix in (".txt", ".csv", ".xyz", ".ply"):
        points = read_ply(path) if suffix == ".ply" else read_text_cloud(path)
        rows = _pick(1, row, path)
        return Samples(cloud_vectors([points]), rows, None, f"{path}, a point cloud of {len(points)} points")
    raise PipelineError(
        f"{path}: unknown file type {suffix or '(none)'}; pass .h5, .npy, .ply, or a .txt/.csv/.xyz point cloud"
    )


# ---- predicting and formatting --------------------------------------------------------------------------------


def predict_probabilities(model: Any, vectors: np.ndarray, preprocess: dict[str, Any], batch_size: int = 256):
    """Class probabilities (N, 10) of flat vectors, through the same network_inputs the preprocess stage uses."""
    x = network_inputs(vectors, preprocess["colormap"], preprocess["align"])
    expected = tuple(model.input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise PipelineError(
            f"the model expects inputs {expected} but params.yaml preprocess (align={preprocess['align']}) gives "
            f"{tuple(x.shape[1:])}; set preprocess.align to what the model was trained with, or retrain it"
        )
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


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
    from mnist3d.model import load_model
    from mnist3d.params import PARAMS_FILE, load_section

    preprocess = load_section("preprocess", params_path or PARAMS_FILE)
    samples = read_samples(path, split, row)  # checked before the slow model load
    if not Path(model_path).is_file():  # before Keras is imported, whose start-up lines would bury the error
        raise PipelineError(f"{model_path} not found; train one first (dvc repro train) or pass --model PATH")
    model = load_model(model_path)
    if model.output_shape[-1] != NUM_CLASSES:
        raise PipelineError(f"{model_path} outputs {model.output_shape[-1]} classes, not {NUM_CLASSES}; retrain it")
    probabilities = predict_probabilities(model, samples.vectors, preprocess)
    lines = [
        f"predict: {samples.description} through {model_path} "
        f"(colormap {preprocess['colormap']}, align {preprocess['align']})",
        *format_lines(samples, probabilities),
    ]
    if csv_path is not None:
        write_csv(csv_path, samples, probabilities)
        lines.append(f"predict: wrote {len(samples.index)} row(s) to {csv_path}")
    return lines
