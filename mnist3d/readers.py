"""Every input file the pipeline reads: vectors and point-cloud .h5, .npy, PLY and text clouds.

Nothing here trusts a file: each is a regular file, sizes are checked before anything is read
(mnist3d.files.check_size), dtypes after, and every value is finite once converted.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist3d import GRID, VOXELS
from mnist3d.errors import PipelineError, reading
from mnist3d.files import check_size, regular_file
from mnist3d.ply import read_ply
from mnist3d.vectors import (
    SHAPES_HELP,
    SPLITS,
    Split,
    check_cloud,
    check_labels,
    check_numbers,
    check_split,
    check_vectors,
    npy_header,
)

GRID_SHAPE = (GRID, GRID, GRID)
MAX_TEXT_BYTES = 64 << 20  # a text cloud is parsed into ~10x its size in Python objects; 64 MB is ~2M points
MAX_CLOUD_GROUPS = 100_000  # the Kaggle train file has 5,000
# All clouds together may take this many times the file limit: Kaggle's 5,000 training clouds are ~110M points,
# 1.3 GB as the float32 that training holds (each group is also checked against the limit on its own).
CLOUDS_TIMES = 4
CHUNK_ROWS = 1024  # rows of a vectors dataset read at a time
DEFLATE = 1  # HDF5's id of the gzip filter


@dataclass
class Samples:
    """What to classify: flat voxel vectors (N, 4096) or (N, 3) point clouds, their rows in the source, labels if known."""

    vectors: np.ndarray | None
    index: np.ndarray
    labels: np.ndarray | None
    description: str  # what was read, for the summary line
    clouds: list[np.ndarray] | None = None  # point clouds still to voxelise, where vectors is None


# ---- HDF5 ---------------------------------------------------------------------------------------------------------


def h5_dataset(h5, key: str, name: str):
    """h5[key] if it is a dataset of real numbers whose declared size is within the limit, else a PipelineError."""
    import h5py

    item = h5.get(key)
    if not isinstance(item, h5py.Dataset):
        kind = "missing" if item is None else f"a {type(item).__name__.lower()}, not a dataset"
        raise PipelineError(f"{name}: {key} is {kind}; is this a 3D MNIST file? fetch or export it again")
    check_numbers(item.dtype, f"{name} {key}", "the 3D MNIST files hold floats and integers")
    check_size(int(np.prod(item.shape, dtype=object)) * item.dtype.itemsize, f"{name} {key}")
    return item


def read_rows(dataset, rows: slice = slice(None)) -> np.ndarray:
    """Rows of an h5 dataset read CHUNK_ROWS at a time into one array of the declared (checked) size."""
    start, stop, _ = rows.indices(len(dataset))
    out = np.empty((max(stop - start, 0), *dataset.shape[1:]), dtype=dataset.dtype)
    for begin in range(start, stop, CHUNK_ROWS):
        end = min(begin + CHUNK_ROWS, stop)
        dataset.read_direct(out, np.s_[begin:end], np.s_[begin - start : end - start])
    return out


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path} is not a readable HDF5 file ({error}); check the path or fetch it again") from None


def read_vectors(path: str | os.PathLike) -> dict[str, Split]:
    """Read and check both splits of a vectors file (the Kaggle full_dataset_vectors.h5 schema)."""
    path = regular_file(path, "run the fetch stage first (dvc repro fetch)")
    with reading(path), _open_h5(path) as h5:
        missing = [k for s in SPLITS for k in (f"X_{s}", f"y_{s}") if k not in h5]
        if missing:
            raise PipelineError(f"{path}: missing datasets {', '.join(missing)}; is this full_dataset_vectors.h5?")
        datasets = {s: (h5_dataset(h5, f"X_{s}", path.name), h5_dataset(h5, f"y_{s}", path.name)) for s in SPLITS}
        splits = {s: Split(read_rows(x), read_rows(y)) for s, (x, y) in datasets.items()}
    for name, split in splits.items():
        check_split(split.x, split.y, f"{path.name} {name}")
    return splits


def read_point_clouds(
    path: str | os.PathLike, rows: Sequence[int] | None = None, dtype=np.float32
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The clouds of a Kaggle point-cloud file as (3, N) C-contiguous arrays, and the labels (None if unlabelled).

    Groups "0", "1", ... in that order; `rows` picks some (none: every one). Every group's structure,
    declared size and label is checked before any points are read, in one pass over the file.
    """
    import h5py

    path = regular_file(path, "fetch the data again, or pass a 3D MNIST point-cloud file")
    with reading(path), _open_h5(path) as h5:
        if len(h5) > MAX_CLOUD_GROUPS:
            raise PipelineError(f"{path}: {len(h5)} groups, more than {MAX_CLOUD_GROUPS}; is it a point-cloud file?")
        groups = dict(h5.items())
        total, labels, datasets = 0, [], []
        for i in range(len(groups)):
            group = groups.get(str(i))
            if not isinstance(group, h5py.Group):
                raise PipelineError(
                    f"{path}: group {i} is missing or not a group; is this a 3D MNIST point-cloud file?"
                )
            points = h5_dataset(group, "points", f"{path} group {i}")
            if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
                raise PipelineError(f"{path} group {i}: points have shape {points.shape}, expected (N, 3) with N > 0")
            total += points.size * np.dtype(dtype).itemsize
            labels.append(group.attrs.get("label"))
            datasets.append(points)
        check_size(total, f"{path}: the points of all groups as {np.dtype(dtype)}", times=CLOUDS_TIMES)
        label_array = None
        if all(label is not None for label in labels):
            try:
                label_array = np.array(labels)
            except ValueError:  # labels of different shapes
                raise PipelineError(f"{path}: the group labels are not single integers; fetch it again") from None
            if label_array.shape != (len(labels),):
                raise PipelineError(f"{path}: the group labels are not single integers; fetch it again")
            check_labels(label_array, f"{path} labels")
        clouds = []
        for i in range(len(groups)) if rows is None else rows:
            # Axis-major (3, N): every per-axis step of training then runs over contiguous memory.
            clouds.append(axis_major(datasets[i], dtype, f"{path} group {i} points"))
            if not np.isfinite(clouds[-1]).all():
                raise PipelineError(f"{path} group {i}: points hold NaN or Inf (as {np.dtype(dtype)}); fetch it again")
    return clouds, label_array


def axis_major(dataset, dtype, name: str) -> np.ndarray:
    """All of an (N, k) h5 dataset as a C-contiguous (k, N) array of `dtype` (values past its range become Inf).

    Kaggle's clouds are gzip chunks of one column each. Inflating them here with zlib takes ~0.6x the CPU
    of h5py's general read, and reading the 5,000 training clouds is the first thing every training run does.
    Any other layout, or a chunk never written, goes through h5py.
    """
    plist = dataset.id.get_create_plist()
    if dataset.chunks is not None and plist.get_nfilters() == 1 and plist.get_filter(0)[0] == DEFLATE:
        try:
            return _inflate_chunks(dataset, dtype, name)
        except RuntimeError:  # a chunk that was never written: h5py fills it in
            pass
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(np.asarray(dataset[()], dtype=dtype).T)


def _inflate_chunks(dataset, dtype, name: str) -> np.ndarray:
    (rows, columns), (chunk_rows, chunk_columns), stored = dataset.shape, dataset.chunks, dataset.dtype
    chunk_bytes, read_chunk = chunk_rows * chunk_columns * stored.itemsize, dataset.id.read_direct_chunk
    out = np.empty((columns, rows), dtype=dtype)
    with np.errstate(over="ignore"):
        for start in range(0, rows, chunk_rows):
            for column in range(0, columns, chunk_columns):
                skipped, raw = read_chunk((start, column))
                # Never inflate past the chunk's size, whatever the stream holds (bit 0 set: stored uncompressed).
                try:
                    data = raw if skipped & 1 else zlib.decompressobj().decompress(raw, chunk_bytes)
                except zlib.error:
                    data = b""
                if len(data) != chunk_bytes:
                    raise PipelineError(f"{name}: a compressed chunk is damaged; fetch the file again")
                block = np.frombuffer(data, stored).reshape(chunk_rows, chunk_columns)
                out[column : column + chunk_columns, start : start + chunk_rows] = block[
                    : rows - start, : columns - column
                ].T
    return out


def read_clouds(path: str | os.PathLike, indices: Sequence[int] | None = None) -> list[np.ndarray]:
    """The clouds of a Kaggle point-cloud file as (3, N) float32 C-contiguous arrays, groups "0", "1", ... in order."""
    return read_point_clouds(path, indices, np.float32)[0]


# ---- .npy and text clouds -----------------------------------------------------------------------------------------


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

    with reading(path), _open_h5(path) as h5:
        if f"X_{split}" in h5:
            x = h5_dataset(h5, f"X_{split}", str(path))
            if x.ndim != 2 or x.shape[1] != VOXELS:
                raise PipelineError(f"{path}: X_{split} has shape {x.shape}, expected (N, {VOXELS})")
            rows = _pick(len(x), row, path)
            vectors = read_rows(x, slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 0))
            labels = None
            if f"y_{split}" in h5:
                y = h5_dataset(h5, f"y_{split}", str(path))
                if y.shape == (len(x),):
                    labels = read_rows(y, slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 0))
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
