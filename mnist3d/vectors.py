"""The Kaggle `full_dataset_vectors.h5` schema: read it, check it, write it."""

from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist3d import GRID, NUM_CLASSES, VOXELS
from mnist3d.errors import PipelineError, reading
from mnist3d.files import check_size, regular_file

VECTORS_FILE = "full_dataset_vectors.h5"
CLOUD_FILES = {"train": "train_point_clouds.h5", "test": "test_point_clouds.h5"}
SPLITS = ("train", "test")
NUMBER_KINDS = "biuf"  # bool, integers, floats; complex, strings, objects and records are refused
SHAPES_HELP = (
    f"expected a point cloud (N, 3), a voxel grid {(GRID, GRID, GRID)} or ({VOXELS},), "
    f"or a batch (N, {GRID}, {GRID}, {GRID}) or (N, {VOXELS})"
)


@dataclass
class Split:
    """One split of flat voxel vectors: x (N, 4096) in [0, 1] and labels y (N,) in 0..9."""

    x: np.ndarray
    y: np.ndarray


def finite_bounds(x: np.ndarray) -> tuple[float, float] | None:
    """The min and max of a non-empty x, or None if it holds NaN or Inf.

    NaN propagates through both and Inf shows in one, so no isfinite pass (and its temporary) is needed.
    """
    low, high = x.min(), x.max()
    return (low, high) if np.isfinite(low) and np.isfinite(high) else None


def check_labels(y: np.ndarray, name: str) -> None:
    """Raise a PipelineError that names `name` unless y holds integers in 0..9 (not floats, strings or booleans)."""
    if not np.issubdtype(y.dtype, np.integer):
        raise PipelineError(f"{name}: labels have dtype {y.dtype}, expected integers in 0..{NUM_CLASSES - 1}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise PipelineError(f"{name}: labels must lie in 0..{NUM_CLASSES - 1}, found {y.min()}..{y.max()}")


def check_split(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Raise a PipelineError that names `name` if x or y break the schema."""
    if x.ndim != 2 or x.shape[1] != VOXELS:
        raise PipelineError(
            f"{name}: X has shape {x.shape}, expected (N, {VOXELS}); is this the 3D MNIST vectors file?"
        )
    if y.ndim != 1:
        raise PipelineError(f"{name}: y has shape {y.shape}, expected (N,)")
    if len(x) != len(y):
        raise PipelineError(f"{name}: X has {len(x)} rows but y has {len(y)}; the file is inconsistent, fetch it again")
    if len(x) == 0:
        raise PipelineError(f"{name}: the split is empty; fetch the data again")
    check_labels(y, name)
    bounds = finite_bounds(x)
    if bounds is None:
        raise PipelineError(f"{name}: X holds NaN or Inf values; fetch the data again")
    low, high = bounds
    if low < 0 or high > 1:
        raise PipelineError(f"{name}: X must lie in [0, 1], found {low:.3g}..{high:.3g}; fetch the data again")


def check_numbers(dtype: np.dtype, name: str, fix: str) -> None:
    """Refuse anything but real numbers (complex values, strings and records included)."""
    if dtype.kind not in NUMBER_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise PipelineError(f"{name}: values have dtype {dtype}, expected real numbers; {fix}")


def check_vectors(x: np.ndarray, name: str) -> np.ndarray:
    """x as float64 if it is finite (N, 4096) voxel vectors in [0, 1] with no row all zeros, else a PipelineError."""
    check_numbers(x.dtype, name, "save the grid as floats")
    if x.ndim != 2 or x.shape[1] != VOXELS or len(x) == 0:
        raise PipelineError(f"{name}: shape {x.shape}, {SHAPES_HELP}")
    x = x.astype(np.float64, copy=False)
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
    return x


def check_cloud(points: np.ndarray, name: str) -> np.ndarray:
    """points as float64 if they are a finite, non-empty (N, 3) array of numbers, else a PipelineError."""
    check_numbers(points.dtype, name, "save x y z as floats")
    if points.ndim != 2 or points.shape[1] != 3:
        raise PipelineError(f"{name}: point cloud has shape {points.shape}, expected (N, 3): one x y z row per point")
    if len(points) == 0:
        raise PipelineError(f"{name}: the point cloud has no points; pass a file with at least one x y z row")
    points = points.astype(np.float64, copy=False)
    if not np.isfinite(points).all():
        raise PipelineError(f"{name}: the point cloud holds NaN or Inf coordinates; remove those points")
    with np.errstate(over="ignore"):  # an extent past the float range shows as Inf, checked just below
        extent = points.max(axis=0) - points.min(axis=0)
    if not np.isfinite(extent).all():
        raise PipelineError(f"{name}: the coordinates are too large to voxelise (near 1e308); scale the cloud down")
    return points


def write_vectors(path: str | os.PathLike, splits: dict[str, Split]) -> None:
    """Write splits in the Kaggle schema: float64 X and int64 y."""
    import h5py

    with h5py.File(path, "w") as h5:
        for name, split in splits.items():
            h5.create_dataset(f"X_{name}", data=split.x.astype(np.float64))
            h5.create_dataset(f"y_{name}", data=split.y.astype(np.int64))


def write_processed(path: str | os.PathLike, x: np.ndarray | Iterable[np.ndarray], y: np.ndarray) -> None:
    """Write one preprocessed split as an uncompressed NPZ with `x` and `y`, as np.savez would.

    `x` may also come as consecutive blocks of rows, which are streamed into the file, so the whole
    array never has to sit in memory.
    """
    blocks = iter([x] if isinstance(x, np.ndarray) else x)
    first = next(blocks)
    shape = (len(y), *first.shape[1:])
    rows = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as npz:
        with npz.open("x.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array_header_1_0(
                entry, {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
            )
            for block in itertools.chain([first], blocks):
                if block.shape[1:] != shape[1:] or block.dtype != first.dtype:
                    raise ValueError(f"block {block.shape} {block.dtype} does not continue {shape} {first.dtype}")
                entry.write(np.ascontiguousarray(block).data)
                rows += len(block)
        if rows != len(y):
            raise ValueError(f"{rows} rows of x for {len(y)} labels")
        with npz.open("y.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array(entry, np.asarray(y), allow_pickle=False)


def read_processed(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a preprocessed split: x (N, 16, 16, 16, C) floats and y (N,) labels in 0..9.

    Each array's declared shape and dtype are checked before it is read, so a crafted file cannot exhaust memory.
    """
    path = regular_file(path, "run the preprocess stage first (dvc repro preprocess)")
    try:
        with reading(path), zipfile.ZipFile(path) as npz:
            for name in ("x", "y"):
                _check_npy_header(npz, name, path)
        with reading(path), np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PipelineError(f"{path} is not a readable preprocessed NPZ ({error}); run: dvc repro preprocess") from None
    if x.ndim != 5 or x.shape[1:4] != (GRID, GRID, GRID) or len(x) != len(y) or len(y) == 0:
        raise PipelineError(f"{path} has x {x.shape} and y {y.shape}; run: dvc repro --force preprocess")
    check_labels(y, str(path))
    return x, y


def _check_npy_header(npz: zipfile.ZipFile, name: str, path: Path) -> None:
    """Refuse `name`.npy in `npz` unless it declares real numbers (floats for x) of a size within the limit."""
    with npz.open(f"{name}.npy") as member:
        shape, dtype = npy_header(member)
    fix = "run: dvc repro --force preprocess"
    check_numbers(dtype, f"{path} {name}", fix)
    if name == "x" and dtype.kind != "f":
        raise PipelineError(f"{path} x: values have dtype {dtype}, expected floats; {fix}")
    # Twice the input limit: the Kaggle train split's grids take about 1 GB.
    check_size(int(np.prod(shape, dtype=object)) * dtype.itemsize, f"{path} {name}", times=2)


def npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype that an .npy stream declares, read from its header alone."""
    version = np.lib.format.read_magic(handle)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = header(handle)
    return shape, dtype
