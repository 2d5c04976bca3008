"""The Kaggle schema: what its vectors, labels and point clouds must hold, checked wherever they enter; and a writer."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mnist3d import GRID, NUM_CLASSES, VOXELS
from mnist3d.errors import PipelineError

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


def check_pairs(y: np.ndarray, name: str) -> None:
    """Refuse labels that are not (original, rotated copy) pairs: rows 2i and 2i+1 are one digit in the dataset.

    The train/validation split keeps pairs whole, the metrics score each half, and the fresh copies take the labels
    of the clouds by these pairs: all of it would be silently wrong on rows in another order.
    """
    if len(y) % 2:
        raise PipelineError(
            f"{name}: {len(y)} rows, an odd count; 3D MNIST stores each digit twice (original, rotated)"
        )
    differ = np.flatnonzero(y[0::2] != y[1::2])
    if len(differ):
        row = 2 * differ[0]
        raise PipelineError(
            f"{name}: rows {row} and {row + 1} have labels {y[row]} and {y[row + 1]}, but 3D MNIST stores each digit "
            f"as row 2i and its rotated copy as row 2i+1 ({len(differ)} pair(s) disagree); is the file in its order?"
        )


def check_cloud_labels(cloud_labels: np.ndarray, y: np.ndarray, name: str) -> None:
    """Refuse point clouds whose count or labels disagree with the vectors' pairs: cloud i made rows 2i and 2i+1."""
    if 2 * len(cloud_labels) != len(y):
        raise PipelineError(
            f"{name}: {len(cloud_labels)} clouds for {len(y)} vectors, expected one cloud per (original, rotated) "
            "pair; fetch the files again, all from one copy of the dataset"
        )
    differ = np.flatnonzero(cloud_labels != y[0::2])
    if len(differ):
        index = differ[0]
        raise PipelineError(
            f"{name}: cloud {index} is labelled {cloud_labels[index]} but vectors {2 * index} and {2 * index + 1} "
            f"are {y[2 * index]} ({len(differ)} cloud(s) disagree); fetch the files again, all from one copy"
        )


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
    check_pairs(y, name)
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
