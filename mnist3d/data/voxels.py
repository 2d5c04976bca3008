"""Point clouds from digit images and their 16^3 voxel grids, by the documented Kaggle procedure."""

from __future__ import annotations

import numpy as np

from mnist3d import GRID

FACE_STEPS = np.linspace(-0.5, 0.5, 5)  # a 5-point grid across each unit pixel face
DEPTH_STEPS = np.linspace(-3.0, 3.0, 30)  # 30 points along the extrusion depth
NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (row, column) offsets of the four side faces
NOISE = 0.25  # the dataset's noise on a rotated cloud: uniform within +-0.25 of its standard deviation, per axis


def prism_cloud(image: np.ndarray) -> np.ndarray:
    """Sample the surface of the 1x1x6 prisms extruded from every pixel > 0, as (N, 3) with x=row, y=column."""
    lit = np.asarray(image) > 0
    padded = np.pad(lit, 1)
    rows, cols = np.nonzero(lit)
    centres = np.stack([rows, cols], axis=1).astype(np.float64)
    face_u, face_v = (g.ravel() for g in np.meshgrid(FACE_STEPS, FACE_STEPS, indexing="ij"))
    parts = []
    for depth in (-3.0, 3.0):  # front and back faces, 5x5 each
        xy = centres[:, None, :] + np.stack([face_u, face_v], axis=1)[None]
        z = np.full(xy.shape[:2] + (1,), depth)
        parts.append(np.concatenate([xy, z], axis=2).reshape(-1, 3))
    side_u, side_z = (g.ravel() for g in np.meshgrid(FACE_STEPS, DEPTH_STEPS, indexing="ij"))
    for d_row, d_col in NEIGHBOURS:  # side faces only where the neighbour is dark, 5x30 each
        open_side = ~padded[rows + 1 + d_row, cols + 1 + d_col]
        centre = centres[open_side]
        if d_row:
            x = centre[:, :1] + 0.5 * d_row + 0 * side_u[None]
            y = centre[:, 1:] + side_u[None]
        else:
            x = centre[:, :1] + side_u[None]
            y = centre[:, 1:] + 0.5 * d_col + 0 * side_u[None]
        z = np.broadcast_to(side_z[None], x.shape)
        parts.append(np.stack([x, y, z], axis=2).reshape(-1, 3))
    return np.concatenate(parts)


def columns(points: np.ndarray) -> np.ndarray:
    """An (N, 3) cloud as a C-contiguous (3, N) copy: numpy reduces its rows about 10x faster than the columns."""
    return np.ascontiguousarray(points.T)


def normalise(points: np.ndarray) -> np.ndarray:
    """Divide by the largest extent, then subtract the mean (the dataset's order)."""
    axes = columns(points)
    extent = (axes.max(axis=1) - axes.min(axis=1)).max()
    return points / extent - axes.mean(axis=1) / extent


def upright(points: np.ndarray) -> np.ndarray:
    """Turn a cloud upright with the dataset's 90 degree rotation about y: (x, y, z) -> (z, y, -x)."""
    return np.stack([points[:, 2], points[:, 1], -points[:, 0]], axis=1)


def digit_cloud(image: np.ndarray) -> np.ndarray:
    """The dataset's point cloud for one zero-padded digit image."""
    return upright(normalise(prism_cloud(image)))


def random_rotations(rng: np.random.Generator, count: int) -> np.ndarray:
    """Rotation matrices M = Rz @ Ry @ Rx with angles from N(0, 90deg), N(0, 90deg), N(0, 180deg); apply as cloud @ M."""
    ax, ay = rng.normal(0.0, np.pi / 2, (2, count))
    az = rng.normal(0.0, np.pi, count)
    one, zero = np.ones(count), np.zeros(count)

    def stack(rows):
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = stack([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    ry = stack([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rz = stack([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return rz @ ry @ rx


def noise_spread(variances: np.ndarray) -> np.ndarray:
    """The half-width of the dataset's uniform noise on each axis of a rotated cloud, from the cloud's variances."""
    return NOISE * np.sqrt(variances)


def rotate_with_noise(cloud: np.ndarray, rotation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate a cloud, then add the dataset's uniform noise (noise_spread) on each axis."""
    rotated = cloud @ rotation
    spread = noise_spread(columns(rotated).var(axis=1))  # the square root of var is exactly numpy's std
    return rotated + rng.uniform(-1.0, 1.0, rotated.shape) * spread


def voxelise(cloud: np.ndarray, grid: int = GRID) -> np.ndarray:
    """The voxel vector (grid^3,) of one (N, 3) cloud, binned exactly as the dataset's VoxelGrid (voxelise_axes)."""
    return voxelise_axes(columns(np.asarray(cloud, dtype=np.float64)), grid=grid)


def voxelise_axes(axes: np.ndarray, exact: bool = True, grid: int = GRID) -> np.ndarray:
    """The voxel vector (grid^3,) of one axis-major (3, N) cloud: point counts per voxel over the largest count.

    The box is the points' min/max +- 0.001, grown to a cube. `exact` bins as the dataset's VoxelGrid does, by
    np.linspace edges with np.searchsorted's rule (a point on an edge falls in the lower bin). Otherwise it bins by
    plain floor division in the points' own dtype, overwriting `axes`: for fresh copies, whose continuous noise puts
    a point on an edge with probability zero, that costs a fraction of the exact rule.
    """
    low, high = axes.min(axis=1) - 0.001, axes.max(axis=1) + 0.001
    extent = high - low
    side = extent.max()
    low -= (side - extent) / 2  # grow the box to a cube around its centre
    if exact:
        high += (side - extent) / 2
        flat = np.zeros(axes.shape[1], dtype=np.intp)
        for axis, stride in enumerate((1, grid, grid * grid)):  # flat index x + 16 y + 256 z
            values, edges = axes[axis], np.linspace(low[axis], high[axis], grid + 1)
            # np.searchsorted(edges, values) - 1, without its binary search: the bin by arithmetic, then moved by one
            # where float rounding put it past an edge as linspace computes them (edges[i] < value <= edges[i + 1]).
            index = ((values - low[axis]) * (grid / (high[axis] - low[axis]))).astype(np.intp)
            np.clip(index, 0, grid - 1, out=index)
            index -= (values <= edges[index]) & (index > 0)
            index += (values > edges[index + 1]) & (index < grid - 1)
            flat += stride * index
    else:
        axes -= low[:, None]
        axes *= grid / side
        bins = axes.astype(np.int32)  # never negative: every point lies above the box's low corner
        np.minimum(bins, grid - 1, out=bins)
        flat = bins[0] + grid * bins[1] + grid * grid * bins[2]
    counts = np.bincount(flat, minlength=grid**3)
    return counts / counts.max()


def voxelise_batch(clouds: list[np.ndarray], grid: int = GRID) -> np.ndarray:
    """Voxel vectors (B, grid^3) of several clouds, one at a time: each cloud's points stay in the cache."""
    return np.stack([voxelise(cloud, grid) for cloud in clouds])
