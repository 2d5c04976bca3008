"""What predict reads: any file of samples to classify, in every format it takes, checked before any data is read.

A vectors or point-cloud .h5 in the Kaggle schema (through mnist3d.io.readers), voxel grids or a cloud in an .npy,
a text cloud (.txt, .csv, .xyz) or a PLY cloud.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist3d import GRID, VOXELS
from mnist3d.errors import PipelineError, reading
from mnist3d.io.files import check_size, regular_file
from mnist3d.io.ply import read_ply
from mnist3d.io.processed import npy_header
from mnist3d.io.readers import h5_dataset, open_h5, read_point_clouds, read_rows
from mnist3d.io.schema import SHAPES_HELP, SPLITS, check_cloud, check_labels, check_numbers, check_vectors

GRID_SHAPE = (GRID, GRID, GRID)
MAX_TEXT_BYTES = 64 << 20  # a text cloud is parsed into ~10x its size in Python objects; 64 MB is ~2M points


@dataclass
class Samples:
    """What to classify: flat voxel vectors (N, 4096) or (N, 3) point clouds, their rows in the source, labels if known."""

    vectors: np.ndarray | None
    index: np.ndarray
    labels: np.ndarray | None
    description: str  # what was read, for the summary line
    clouds: list[np.ndarray] | None = None  # point clouds still to voxelise, where vectors is None


def read_npy(path: Path) -> np.ndarray:
    """An .npy array, its header (shape, dtype) checked against the size limit before the data is read."""
    with reading(path), open(path, "rb") as handle:
        try:
            shape, dtype = npy_header(handle)
        except (ValueError, EOFError, OSError) as error:
            raise PipelineError(f"{path} is not a readable .npy array ({error}); save it with numpy.save") from None
        check_numbers(dtype, str(path), "save the array as floats")
        check_size(int(np.prod(shape, dtype=object)) * dtype.itemsize, str(path))
        handle.seek(0)
        try:
            array = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise PipelineError(f"{path} is not a readable .npy array ({error}); save it with numpy.save") from None
    return array


def read_text_cloud(path: Path) -> np.ndarray:
    """An (N, 3) cloud from text: one point per line, separated by spaces, tabs or commas; `#` starts a comment."""
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise PipelineError(
            f"{path} is over {MAX_TEXT_BYTES >> 20} MB of text; save a cloud that large as .npy or binary .ply"
        )
    with reading(path):
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise PipelineError(f"{path} is not a text file; save the cloud as x y z lines, .npy or .ply") from None
        try:
            with warnings.catch_warnings():  # check_cloud names an empty cloud; the warning would be a second line
                warnings.filterwarnings("ignore", "loadtxt: input contained no data")
                points = np.loadtxt(text.replace(",", " ").splitlines(), dtype=np.float64, ndmin=2, comments="#")
        except ValueError as error:
            raise PipelineError(
                f"{path} is not a table of numbers ({error}); write one 'x y z' point per line, "
                "comment out any header with #"
            ) from None
    return check_cloud(points, str(path))


# ---- any input to classify ----------------------------------------------------------------------------------------


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

    with reading(path), open_h5(path) as h5:
        if f"X_{split}" in h5:
            x = h5_dataset(h5, f"X_{split}", str(path))
            if x.ndim != 2 or x.shape[1] != VOXELS:
                raise PipelineError(f"{path}: X_{split} has shape {x.shape}, expected (N, {VOXELS})")
            rows = _pick(len(x), row, path)
            vectors = read_rows(x, slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 0), f"{path} X_{split}")
            labels = None
            if f"y_{split}" in h5:
                y = h5_dataset(h5, f"y_{split}", str(path))
                if y.shape not in ((len(x),), (len(x), 1)):  # a column of labels is read as a vector
                    raise PipelineError(
                        f"{path}: y_{split} has shape {y.shape} but X_{split} has {len(x)} rows; expected "
                        f"({len(x)},) labels, one per row: save them so, or drop y_{split} to classify without them"
                    )
                labels = read_rows(y, slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 0), f"{path} y_{split}")
                labels = labels.reshape(-1)
                check_labels(labels, f"{path} y_{split}")
            vectors = check_vectors(vectors, f"{path} X_{split}")
            return Samples(vectors, rows, labels, f"{path} X_{split}, {len(rows)} row(s)")
        if not (isinstance(h5.get("0"), h5py.Group) and "points" in h5["0"]):
            raise PipelineError(
                f"{path}: no X_{split} dataset and no point-cloud groups; pass full_dataset_vectors.h5 or a point-cloud .h5"
            )
        rows = _pick(len(h5), row, path)
    clouds, labels = read_point_clouds(path, rows, np.float64)
    points = [check_cloud(c.T, f"{path} group {i}") for c, i in zip(clouds, rows, strict=True)]
    labels = None if labels is None else labels[rows]
    return Samples(None, rows, labels, f"{path} point clouds, {len(rows)} cloud(s)", points)


def read_input(path: str | os.PathLike, split: str = "test", row: int | None = None) -> Samples:
    """Read and check any input to classify: .h5, .npy (cloud or grids), .txt/.csv/.xyz (cloud) or .ply (cloud)."""
    if split not in SPLITS:
        raise PipelineError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = regular_file(path, "check the path of the file to classify")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path, split, row)
    if suffix == ".npy":
        array = read_npy(path)
        if array.ndim == 2 and array.shape[1] == 3:
            points = check_cloud(array, str(path))
            rows = _pick(1, row, path)
            return Samples(None, rows, None, f"{path}, a point cloud of {len(points)} points", [points])
        if array.shape in (GRID_SHAPE, (VOXELS,)):
            array = array.reshape(1, VOXELS)
        elif (array.ndim == 4 and array.shape[1:] == GRID_SHAPE) or (array.ndim == 2 and array.shape[1] == VOXELS):
            array = array.reshape(len(array), VOXELS)
        else:
            raise PipelineError(f"{path}: shape {array.shape}, {SHAPES_HELP}")
        rows = _pick(len(array), row, path)
        vectors = check_vectors(array[rows], str(path))
        return Samples(vectors, rows, None, f"{path}, {len(rows)} voxel grid(s)")
    if suffix in (".txt", ".csv", ".xyz", ".ply"):
        points = check_cloud(read_ply(path), str(path)) if suffix == ".ply" else read_text_cloud(path)
        rows = _pick(1, row, path)
        return Samples(None, rows, None, f"{path}, a point cloud of {len(points)} points", [points])
    raise PipelineError(
        f"{path}: unknown file type {suffix or '(none)'}; pass .h5, .npy, .ply, or a .txt/.csv/.xyz point cloud"
    )
