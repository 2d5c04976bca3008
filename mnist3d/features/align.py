"""Slab alignment: turn each voxel grid so the digit's plane faces the x axis, undoing most of a 3D rotation.

A digit is a thin extruded slab, so its least-spread axis (the smallest principal axis of the voxel
mass) is the extrusion direction. Rotating that axis onto grid x leaves only an in-plane rotation or
mirror for the network to learn. Unrotated digits already face x, so they pass through almost unchanged.
"""

from __future__ import annotations

import itertools

import numpy as np

from mnist3d import GRID, VOXELS

# Voxel centres relative to the grid centre, in the (z, y, x) order of a reshaped vector.
_CENTRES = np.stack(np.meshgrid(*(np.arange(GRID),) * 3, indexing="ij"), axis=-1).reshape(-1, 3) - (GRID - 1) / 2
# Per voxel: 1, its centre and the centre's outer product, so one matmul gives each grid's mass and raw moments.
_MOMENTS = np.concatenate(
    [np.ones((len(_CENTRES), 1)), _CENTRES, np.einsum("ni,nj->nij", _CENTRES, _CENTRES).reshape(-1, 9)], axis=1
)
_X_AXIS = np.array([0.0, 0.0, 1.0])  # grid x in (z, y, x) order


def principal_axes(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each grid's centre of mass and principal axes as columns, least spread first, in (z, y, x) order."""
    moments = np.asarray(vectors, dtype=np.float64) @ _MOMENTS
    moments = moments[:, 1:] / np.where(moments[:, :1] > 0, moments[:, :1], 1.0)  # an empty grid gets no turn
    mean = moments[:, :3]
    covariance = moments[:, 3:].reshape(-1, 3, 3) - mean[:, :, None] * mean[:, None, :]
    return mean, np.linalg.eigh(covariance)[1]  # eigh sorts eigenvalues ascending


def slab_normals(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each grid's centre of mass and least-spread unit axis (sign chosen to point towards +x), in (z, y, x)."""
    mean, axes = principal_axes(vectors)
    return mean, _point_towards(axes[:, :, 0], (2, 1, 0))


def _point_towards(axes: np.ndarray, order: tuple[int, int, int]) -> np.ndarray:
    """Flip each unit axis so that its first clearly non-zero component, taken in `order`, is positive.

    Testing one component alone lets float noise pick the sign when it is ~0 (a normal lying in the
    y-z plane), so the same grid could turn one way alone and the other way in a batch.
    """
    components = axes[:, order]
    first = np.argmax(np.abs(components) > 1e-6, axis=1)
    return axes * np.where(components[np.arange(len(axes)), first] < 0, -1.0, 1.0)[:, None]


def rotations_onto_axes(axes: np.ndarray) -> np.ndarray:
    """Rotations that carry the least-spread axis onto x and the most-spread onto z (a digit's height when upright).

    Signs: the normal towards +x, the long axis towards +z, the middle one whatever keeps a proper rotation.
    """
    smallest, largest = _point_towards(axes[:, :, 0], (2, 1, 0)), _point_towards(axes[:, :, 2], (0, 1, 2))
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


def align_slabs(vectors: np.ndarray, mode: str = "plane") -> np.ndarray:
    """Voxel vectors (N, 4096) resampled (trilinearly) around their centre of mass so each slab faces x.

    `plane` turns only the slab's normal onto x; `axes` also turns the digit's long axis onto z.
    Returns float32: the resampled values carry no float64 precision worth keeping.
    """
    vectors = np.asarray(vectors).reshape(len(vectors), -1)
    aligned = np.empty(vectors.shape, dtype=np.float32)
    scratch = _Scratch(CHUNK)
    for start in range(0, len(vectors), CHUNK):
        rows = slice(start, start + CHUNK)
        if mode == "axes":
            mean, axes = principal_axes(vectors[rows])
            rotations = rotations_onto_axes(axes)
        else:
            mean, normals = slab_normals(vectors[rows])
            rotations = rotations_onto_x(normals)
        _resample(vectors[rows], rotations, mean, scratch, out=aligned[rows])
    return aligned


CHUNK = 8  # grids resampled at once: their ~2 MB of buffers stay in a core's L2 cache
# The input sits in a zero-padded box, one voxel before and two after each axis: with source coordinates
# clamped to [0, GRID + 1] every trilinear corner lands inside the box, and corners outside the grid read zeros.
_PADDED = GRID + 3
_CORNERS = [dz * _PADDED**2 + dy * _PADDED + dx for dz, dy, dx in itertools.product((0, 1), repeat=3)]
_STEPS = np.arange(GRID, dtype=np.float32) - (GRID - 1) / 2  # voxel centres along one axis


class _Scratch:
    """Buffers for resampling up to `rows` grids. Reusing them keeps the work in warm cache and pages:
    fresh arrays per chunk cost more in page faults than the arithmetic."""

    def __init__(self, rows: int):
        self.box = np.zeros((rows, _PADDED, _PADDED, _PADDED), dtype=np.float32)  # the padding stays zero
        self.weights = np.empty((3, rows, GRID, GRID, GRID), dtype=np.float32)
        self.lower = np.empty((rows, GRID, GRID, GRID), dtype=np.float32)
        self.index = np.empty((rows, GRID, GRID, GRID), dtype=np.float32)
        self.flat_index = np.empty((rows, VOXELS), dtype=np.intp)
        self.corners = np.empty((len(_CORNERS), rows, VOXELS), dtype=np.float32)
        self.row_start = (np.arange(rows, dtype=np.float32) * _PADDED**3).reshape(rows, 1, 1, 1)


def _resample(vectors: np.ndarray, rotations: np.ndarray, mean: np.ndarray, scratch: _Scratch, out: np.ndarray) -> None:
    """Trilinear resampling into `out`: output voxel p reads the input at R^T p around the centre of mass."""
    count = len(vectors)
    box, index, lower = scratch.box[:count], scratch.index[:count], scratch.lower[:count]
    box[:, 1 : GRID + 1, 1 : GRID + 1, 1 : GRID + 1] = vectors.reshape(count, GRID, GRID, GRID)
    rotations, offset = rotations.astype(np.float32), (mean + (GRID - 1) / 2 + 1).astype(np.float32)
    np.copyto(index, scratch.row_start[:count])
    for axis, stride in enumerate((_PADDED**2, _PADDED, 1)):
        # The source coordinate is a sum of one term per output axis (z, y, x): two broadcast adds, no matmul.
        source = scratch.weights[axis, :count]
        terms = [rotations[:, k, axis, None] * _STEPS for k in range(3)]
        np.add((terms[0] + offset[:, axis, None])[:, :, None, None], terms[1][:, None, :, None], out=source)
        source += terms[2][:, None, None, :]
        np.clip(source, 0, GRID + 1, out=source)
        np.floor(source, out=lower)
        source -= lower  # now the weight of the upper corner
        lower *= stride
        index += lower  # float32 holds these integers exactly (< 2**24)
    flat, flat_index = box.ravel(), scratch.flat_index[:count]
    np.copyto(flat_index, index.reshape(count, -1), casting="unsafe")
    # A view that starts `corner` elements later reads that corner without adding `corner` to every index.
    # The indices are intp and in range by construction: take then needs no conversion and no checked copy.
    corners = scratch.corners[:, :count]
    for corner, values in zip(_CORNERS, corners, strict=True):
        np.take(flat[corner:], flat_index, out=values, mode="clip")
    weight_z, weight_y, weight_x = (weight.reshape(count, -1) for weight in scratch.weights[:, :count])
    along_x = [_lerp(corners[i], corners[i + 1], weight_x) for i in (0, 2, 4, 6)]
    along_y = [_lerp(along_x[i], along_x[i + 1], weight_y) for i in (0, 2)]
    _lerp(along_y[0], along_y[1], weight_z, out=out)


def _lerp(low: np.ndarray, high: np.ndarray, weight: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """low + weight * (high - low), computed in place in `high` (or into `out`)."""
    high -= low
    high *= weight
    return np.add(high, low, out=high if out is None else out)
