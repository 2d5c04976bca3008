"""Training-time augmentation: fresh rotated, noisy copies of the training clouds, or cube symmetries of the grids."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from mnist3d import GRID
from mnist3d.data.voxels import noise_spread, random_rotations, voxelise_axes
from mnist3d.errors import PipelineError
from mnist3d.features.inputs import network_inputs
from mnist3d.features.symmetry import apply_symmetry, cube_symmetries
from mnist3d.io.processed import Clouds, read_packed_clouds
from mnist3d.io.schema import check_cloud_labels

NOISE_POOL = 1 << 22  # uniform draws made once per epoch; each copy reads its noise from a random window of them


def keep_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> None:
    """Have glibc's malloc reuse freed blocks below 256 MB instead of handing them back to the OS (elsewhere: no-op).

    Each fresh copy's clouds, grids and temporaries are 0.1-40 MB, by default each a fresh mmap whose pages fault in
    one by one. Reusing them took an epoch's fresh copies on the dev set from 1.4-3.6 s of CPU (median 2.5) to
    1.3-1.6 s, measured in turns on 2 cores. Only the train stage calls it: it changes the whole process.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
    mallopt(-1, trim_threshold)  # M_TRIM_THRESHOLD


class RotatedCopies:
    """Fresh copies of training clouds, rotated and noised as the dataset's odd rows were, as voxel vectors.

    Called with an rng, it gives one epoch's copies (N, 4096) of the clouds `ids` names. Each digit may first be
    turned in its own plane by a small random angle (`jitter_degrees`, the standard deviation) and slanted (its
    width shifted by `jitter_slant` times its height): new handwriting for the same label. `upright` copies take
    those alone, with no rotation and no noise, as the even rows.

    Two shortcuts make it about twice as fast as drawing every point's noise and measuring every rotated cloud's
    spread: the spread of a rotated cloud follows from its covariance (stored by preprocess), and the noise of each
    copy is a window of one pool of uniform draws per epoch, at a random offset, so within a copy it is still
    independent and uniform. Binning skips the dataset's exact tie rule (voxelise_axes), which continuous noise
    never needs.
    """

    def __init__(
        self,
        clouds: Clouds,
        ids: np.ndarray,
        jitter_degrees: float = 0.0,
        jitter_slant: float = 0.0,
        upright: bool = False,
    ):
        self.clouds, self.ids, self.upright = clouds, ids, upright
        self.jitter, self.slant = np.radians(jitter_degrees), jitter_slant
        self.sizes = np.diff(clouds.offsets)[ids]
        self.covariances = clouds.covariances[ids]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        count = len(self.ids)
        # cloud @ M in the dataset's row-vector convention is M.T @ cloud here
        rotations = (
            np.tile(np.eye(3), (count, 1, 1)) if self.upright else random_rotations(rng, count).transpose(0, 2, 1)
        )
        # In the digit's own plane first: x is the upright digit's normal, y its width and z its height.
        if self.jitter:
            rotations = rotations @ turns_about_x(rng.normal(0.0, self.jitter, count))
        if self.slant:
            slants = np.tile(np.eye(3), (count, 1, 1))
            slants[:, 1, 2] = rng.normal(0.0, self.slant, count)
            rotations = rotations @ slants
        pool = None if self.upright else rng.random(max(NOISE_POOL, 3 * self.sizes.max()), dtype=np.float32)
        if pool is not None:  # the noise of each rotated copy scales with its spread along each axis
            spreads = noise_spread(np.einsum("bij,bjk,bik->bi", rotations, self.covariances, rotations))
            spreads = spreads.astype(np.float32)
            pool *= 2
            pool -= 1
            starts = rng.integers(0, len(pool) - 3 * self.sizes + 1)
        vectors = np.empty((count, GRID**3), dtype=np.float64)
        for row, (index, rotation) in enumerate(zip(self.ids, rotations.astype(np.float32), strict=True)):
            points = rotation @ self.clouds.cloud(index)
            if pool is not None:
                noise = pool[starts[row] : starts[row] + points.size].reshape(points.shape)
                points += noise * spreads[row, :, None]
            vectors[row] = voxelise_axes(points, exact=False)
        return vectors


def turns_about_x(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) by `angles` (radians) about the x axis."""
    turns = np.tile(np.eye(3), (len(angles), 1, 1))
    turns[:, 1, 1] = turns[:, 2, 2] = np.cos(angles)
    turns[:, 2, 1] = np.sin(angles)
    turns[:, 1, 2] = -turns[:, 2, 1]
    return turns


def random_symmetries(grids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each grid under a cube symmetry drawn at random: exact augmentation when no point clouds exist."""
    symmetries = cube_symmetries()
    choice = rng.integers(len(symmetries), size=len(grids))
    out = np.empty_like(grids)
    for index in np.unique(choice):
        rows = np.nonzero(choice == index)[0]
        out[rows] = apply_symmetry(grids[rows], symmetries[index])
    return out


def fresh_copies(
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    train_rows: np.ndarray,
    clouds: Clouds | None,
    preprocess: dict[str, Any],
):
    """The per-epoch maker of extra training grids for `train.augment`, and their labels; (None, None) for none.

    `clouds` makes `copies_per_epoch` fresh rotated, noisy copies of each training cloud per epoch (cloud i made
    rows 2i and 2i+1), and `upright_copies` unrotated ones, each digit first turned and slanted in its plane (the
    `jitter_*` params); `cube` turns the dataset's rotated rows by random cube symmetries.
    """
    if params["augment"] == "none":
        return None, None
    cloud_ids = train_rows[train_rows % 2 == 0] // 2
    if params["augment"] == "clouds":
        makers = [
            RotatedCopies(clouds, np.tile(cloud_ids, count), params["jitter_degrees"], params["jitter_slant"], upright)
            for count, upright in ((params["copies_per_epoch"], False), (params["upright_copies"], True))
            if count
        ]
        colormap, aligned = preprocess["colormap"], preprocess["align"]

        def make(rng: np.random.Generator) -> np.ndarray:
            return network_inputs(np.concatenate([maker(rng) for maker in makers]), colormap, aligned)

        return make, clouds.labels[np.concatenate([maker.ids for maker in makers])]
    rotated = x[2 * np.tile(cloud_ids, params["copies_per_epoch"]) + 1]
    return (lambda rng: random_symmetries(rotated, rng)), y[2 * np.tile(cloud_ids, params["copies_per_epoch"]) + 1]


def clouds_for(params: dict[str, Any], points_path: Any, index_path: Any, y: np.ndarray) -> Clouds | None:
    """The clouds the `train` params need: read and checked when `augment` is clouds, else None."""
    return read_training_clouds(points_path, index_path, y) if params["augment"] == "clouds" else None


def read_training_clouds(points_path: Any, index_path: Any, y: np.ndarray) -> Clouds:
    """The clouds `train.augment: clouds` re-rotates, checked against the training labels' pairs."""
    clouds = read_packed_clouds(points_path, index_path)
    if not len(clouds):
        raise PipelineError(
            "train.augment is clouds, but the data has no point clouds to rotate (the source gave only vectors); "
            "augment with cube symmetries instead: dvc exp run -S train.augment=cube"
        )
    check_cloud_labels(clouds.labels, y, str(index_path))
    return clouds
