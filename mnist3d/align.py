"""Slab alignment: turn each voxel grid so the digit's plane faces the x axis, undoing most of a 3D rotation.

A digit is a thin extruded slab, so its least-spread axis (the smallest principal axis of the voxel
mass) is the extrusion direction. Rotating that axis onto grid x leaves only an in-plane rotation or
mirror for the network to learn. Unrotated digits already face x, so they pass through almost unchanged.
"""

from __future__ import annotations

import itertools

import numpy as np

from mnist3d import GRID

# Voxel centres relative to the grid centre, in the (z, y, x) order of a reshaped vector.
_CENTRES = np.stack(np.meshgrid(*(np.arange(GRID),) * 3, indexing="ij"), axis=-1).reshape(-1, 3) - (GRID - 1) / 2
_PRODUCTS = np.einsum("ni,nj->nij", _CENTRES, _CENTRES).reshape(-1, 9)  # for weighted second moments by one matmul
_X_AXIS = np.array([0.0, 0.0, 1.0])  # grid x in (z, y, x) order


def principal_axes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each grid's centre of mass and principal axes as columns, least spread first, in (z, y, x) order."""
    weights = vectors / vectors.sum(axis=1, keepdims=True)
    mean = weights @ _CENTRES
    covariance = (weights @ _PRODUCTS).reshape(-1, 3, 3) - mean[:, :, None] * mean[:, None, :]
    return mean, np.linalg.eigh(covariance)[1]  # eigh sorts eigenvalues ascending


def slab_normals(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each grid's centre of mass and least-spread unit axis (sign chosen to point towards +x), in (z, y, x)."""
    mean, axes = principal_axes(vectors)
    normals = axes[:, :, 0]
    return mean, normals * np.where(normals[:, 2:3] < 0, -1.0, 1.0)


def rotations_onto_axes(axes: np.ndarray) -> np.ndarray:
    """Rotations that carry the least-spread axis onto x and the most-spread onto z (a digit's height when upright).

    Signs: the normal towards +x, the long axis towards +z, the middle one whatever keeps a proper rotation.
    """
    smallest = axes[:, :, 0] * np.where(axes[:, 2:3, 0] < 0, -1.0, 1.0)
    largest = axes[:, :, 2] * np.where(axes[:, 0:1, 2] < 0, -1.0, 1.0)
    rotations = np.stack([largest, axes[:, :, 1], smallest], axis=1)  # rows: targets z, y, x
    rotations[:, 1] *= np.sign(np.linalg.det(rotations))[:, None]
    return rotations


def rotations_onto_x(normals: np.ndarray) -> np.ndarray:
    """The smallest rotations (Rodrigues) that carry each unit normal onto the x axis."""
    axis = np.cross(normals, _X_AXIS)
    sine = np.linalg.norm(axis, axis=1)
    cosine = normals @ _X_AXIS
    unit = axis / np.maximum(sine, 1e-12)[:, None]
    cross = np.zeros((len(normals), 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -unit[:, 2], unit[:, 1], -unit[:, 0]
    cross -= cross.transpose(0, 2, 1)
    return np.eye(3) + sine[:, None, None] * cross + (1 - cosine)[:, None, None] * (cross @ cross)


def align_slabs(vectors: np.ndarray, mode: str = "plane", chunk: int = 64) -> np.ndarray:
    """Voxel vectors (N, 4096) resampled (trilinearly) around their centre of mass so each slab faces x.

    `plane` turns only the slab's normal onto x; `axes` also turns the digit's long axis onto z.
    Returns float32: the resampled values carry no float64 precision worth keeping.
    """
    vectors = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    if mode == "axes":
        mean, axes = principal_axes(vectors)
        rotations = rotations_onto_axes(axes)
    else:
        mean, normals = slab_normals(vectors)
        rotations = rotations_onto_x(normals)
    aligned = np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(vectors), chunk):  # chunks keep the temporaries in cache
        rows = slice(start, start + chunk)
        aligned[rows] = _resample(vectors[rows].astype(np.float32), rotations[rows], mean[rows])
    return aligned


def _resample(vectors: np.ndarray, rotations: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Trilinear resampling: output voxel p reads the input at R^T p around the centre of mass."""
    neighbours = []  # per axis, the (index, weight) of the lower and upper neighbour, as contiguous (N, 4096) arrays
    for axis in range(3):
        source = (rotations[:, :, axis] @ _CENTRES.T + (mean[:, axis : axis + 1] + (GRID - 1) / 2)).astype(np.float32)
        lower = np.floor(source)
        upper_weight = source - lower
        lower = lower.astype(np.int32)
        pair = []
        for index, weight in ((lower, 1 - upper_weight), (lower + 1, upper_weight)):
            inside = (index >= 0) & (index < GRID)  # outside the grid weighs nothing
            pair.append((np.where(inside, index, 0), np.where(inside, weight, np.float32(0))))
        neighbours.append(pair)
    aligned = np.zeros_like(vectors)
    row_start = (np.arange(len(vectors), dtype=np.int32) * GRID**3)[:, None]
    flat = vectors.ravel()
    for (z, wz), (y, wy), (x, wx) in itertools.product(*neighbours):
        aligned += (wz * wy * wx) * np.take(flat, row_start + (z * GRID + y) * GRID + x)
    return aligned
