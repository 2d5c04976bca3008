"""The files in data/processed: each split's network inputs, and the training point clouds that train re-rotates.

Preprocess writes them; train and evaluate read them back and trust nothing: every array's declared shape and
dtype are checked before it is read, its values after.
"""

from __future__ import annotations

import itertools
import os
import tokenize
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist3d import GRID
from mnist3d.errors import PipelineError, reading
from mnist3d.io.files import check_size, regular_file
from mnist3d.io.schema import check_labels, check_numbers, finite_bounds

REPRODUCE = "run: dvc repro --force preprocess"


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
    """Read a preprocessed split: x (N, 16, 16, 16, C) floats and y (N,) labels in 0..9."""
    path = regular_file(path, "run the preprocess stage first (dvc repro preprocess)")
    arrays = load_npz(path, {"x": "f", "y": "iu"})
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 5 or x.shape[1:4] != (GRID, GRID, GRID) or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise PipelineError(f"{path} has x {x.shape} and y {y.shape}; {REPRODUCE}")
    check_labels(y, str(path))
    bounds = finite_bounds(x)
    if bounds is None:
        raise PipelineError(f"{path}: the grids hold NaN or Inf; {REPRODUCE}")
    if bounds[0] < 0 or bounds[1] > 1:  # colours from a colormap, as preprocess writes them
        raise PipelineError(
            f"{path}: the grids must lie in [0, 1], found {bounds[0]:.3g}..{bounds[1]:.3g}; {REPRODUCE}"
        )
    return x, y


def load_npz(path: Path, kinds: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays `kinds` names in an NPZ, each refused unless its header declares a dtype of one of the numpy kinds
    given ('f' floats, 'iu' integers) and a size within twice the input limit, before any of them is read."""
    try:
        with reading(path), zipfile.ZipFile(path) as npz:
            for name, kind in kinds.items():
                with npz.open(f"{name}.npy") as member:
                    shape, dtype = npy_header(member)
                check_numbers(dtype, f"{path} {name}", REPRODUCE)
                if dtype.kind not in kind:
                    raise PipelineError(
                        f"{path} {name}: values have dtype {dtype}, expected {_KINDS[kind]}; {REPRODUCE}"
                    )
                # Twice the input limit: the Kaggle train split's grids take about 1 GB.
                check_size(int(np.prod(shape, dtype=object)) * dtype.itemsize, f"{path} {name}", times=2)
        with reading(path), np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in kinds}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PipelineError(f"{path} is not a readable preprocessed NPZ ({error}); {REPRODUCE}") from None


_KINDS = {"f": "floats", "iu": "integers"}


def npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype that an .npy stream declares, read from its header alone."""
    version = np.lib.format.read_magic(handle)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, _, dtype = header(handle)
    except (SyntaxError, tokenize.TokenError) as error:  # numpy parses the header as a Python literal
        raise ValueError(f"the header is not a Python literal: {error}") from None
    return shape, dtype


# ---- the training point clouds ------------------------------------------------------------------------------------


@dataclass
class Clouds:
    """Point clouds packed end to end: cloud i is points[:, offsets[i] : offsets[i + 1]], labelled labels[i]."""

    points: np.ndarray  # (3, P) int16: each cloud centred, at unit extent, in steps of 1 / STEPS
    offsets: np.ndarray  # (C + 1,) int64, from 0 to P
    labels: np.ndarray  # (C,)
    covariances: np.ndarray  # (C, 3, 3) float64: each stored cloud's covariance, so train needs no pass over them

    def __len__(self) -> int:
        return len(self.labels)

    def cloud(self, index: int) -> np.ndarray:
        """Cloud `index` as a C-contiguous (3, N) float32 array at unit extent."""
        return np.multiply(self.points[:, self.offsets[index] : self.offsets[index + 1]], 1 / STEPS, dtype=np.float32)


# Stored points are whole steps of 1/32767 of the cloud's extent: half the bytes of float32, rounding under 2e-5 of
# the extent (a voxel is 1/16 of it), and a cast to float32 that costs train 20 times less per epoch than float16's.
STEPS = 32767


def pack_clouds(clouds: Sequence[np.ndarray], labels: np.ndarray) -> Clouds:
    """(3, N) clouds centred, scaled to unit extent and packed end to end as int16 steps.

    Neither centring nor scaling changes a fresh copy's grid: its box is fitted to its points and its noise scales
    with their spread. Kaggle's clouds are centred at unit extent already, so they are stored as they are, rounded.
    """
    offsets = np.concatenate([[0], np.cumsum([cloud.shape[1] for cloud in clouds])]).astype(np.int64)
    points = np.empty((3, offsets[-1]), dtype=np.int16)
    covariances = np.empty((len(clouds), 3, 3))
    for index, cloud in enumerate(clouds):
        extent = (cloud.max(axis=1) - cloud.min(axis=1)).max()
        steps = cloud - cloud.mean(axis=1, keepdims=True, dtype=np.float64).astype(cloud.dtype)
        steps *= STEPS / extent if extent > 0 else 1  # every coordinate now lies within +-STEPS
        stored = points[:, offsets[index] : offsets[index + 1]]
        np.rint(steps, out=stored, casting="unsafe")
        exact = stored / STEPS  # the covariance of what train will read, rounding included
        mean = exact.mean(axis=1)
        covariances[index] = exact @ exact.T / exact.shape[1] - np.outer(mean, mean)
    return Clouds(points, offsets, np.asarray(labels, dtype=np.int64), covariances)


def write_packed_clouds(points_path: str | os.PathLike, index_path: str | os.PathLike, clouds: Clouds) -> None:
    """The points as an .npy that train memory-maps, and offsets, labels and covariances as an NPZ beside it."""
    np.save(points_path, clouds.points, allow_pickle=False)
    np.savez(index_path, offsets=clouds.offsets, labels=clouds.labels, covariances=clouds.covariances)


def read_packed_clouds(points_path: str | os.PathLike, index_path: str | os.PathLike) -> Clouds:
    """The clouds write_packed_clouds stored, checked; the points are memory-mapped, not read, so this takes milliseconds.

    Whole numbers cannot be NaN or Inf, and any value is a point within twice the unit extent: a damaged file
    gives odd copies, never a crash.
    """
    index_path = regular_file(index_path, "run the preprocess stage first (dvc repro preprocess)")
    index = load_npz(index_path, {"offsets": "iu", "labels": "iu", "covariances": "f"})
    offsets, labels, covariances = index["offsets"], index["labels"], index["covariances"]
    points_path = regular_file(points_path, "run the preprocess stage first (dvc repro preprocess)")
    try:
        with reading(points_path), open(points_path, "rb") as handle:
            shape, dtype = npy_header(handle)
        if dtype != np.int16 or len(shape) != 2 or shape[0] != 3:
            raise PipelineError(f"{points_path} holds {dtype} {shape}, expected (3, N) int16; {REPRODUCE}")
        check_size(int(np.prod(shape, dtype=object)) * dtype.itemsize, str(points_path), times=2)
        points = np.load(points_path, mmap_mode="r", allow_pickle=False) if shape[1] else np.empty(shape, dtype)
    except (OSError, ValueError, EOFError) as error:
        raise PipelineError(f"{points_path} is not a readable .npy array ({error}); {REPRODUCE}") from None
    count = len(labels)
    if (
        labels.shape != (count,)
        or offsets.shape != (count + 1,)
        or covariances.shape != (count, 3, 3)
        or offsets[0] != 0
        or offsets[-1] != shape[1]
        or (np.diff(offsets) <= 0).any()
        or not np.isfinite(covariances).all()
        or (np.linalg.eigvalsh(covariances) < -1e-9).any()  # each a covariance: a copy's noise takes its root
    ):
        raise PipelineError(f"{index_path} does not describe the clouds in {points_path}; {REPRODUCE}")
    check_labels(labels, str(index_path))
    return Clouds(points, offsets.astype(np.int64), labels, covariances)
