"""The point-cloud geometry and VoxelGrid reproduction, on tiny hand-made inputs."""

import numpy as np

from mnist3d.voxels import digit_cloud, prism_cloud, random_rotations, rotate_with_noise, voxelise, voxelise_batch


def test_prism_cloud_samples_faces_and_only_open_sides():
    image = np.zeros((4, 4))
    image[1, 1] = image[1, 2] = 1.0  # two neighbours: the shared side is hidden
    points = prism_cloud(image)
    # 2 pixels x (front + back 5x5) + 6 open sides x 5x30
    assert len(points) == 2 * 50 + 6 * 150
    assert points[:, 2].min() == -3.0 and points[:, 2].max() == 3.0
    assert points[:, 0].min() == 0.5 and points[:, 0].max() == 1.5  # x is the row, +-0.5
    assert points[:, 1].min() == 0.5 and points[:, 1].max() == 2.5  # y is the column


def test_digit_cloud_is_centred_unit_extent_and_upright():
    image = np.zeros((30, 30))
    image[5:25, 14:16] = 1.0  # a vertical bar, 20 rows tall
    cloud = digit_cloud(image)
    np.testing.assert_allclose(cloud.mean(axis=0), 0.0, atol=1e-12)
    extents = cloud.max(axis=0) - cloud.min(axis=0)
    assert np.isclose(extents.max(), 1.0)
    # upright: the extrusion depth (6 of 20 units) moved to x, and the rows to -z
    np.testing.assert_allclose(extents, [0.3, 0.1, 1.0])


def test_voxelise_counts_over_max_with_flat_index_x_fastest():
    cloud = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    vector = voxelise(cloud)
    assert vector.shape == (4096,)
    assert vector.max() == 1.0
    assert vector[15] == 1.0  # two points at x=max, y=z=min: index x + 16y + 256z = 15
    assert vector[0] == 0.5 and vector[15 + 16 * 15 + 256 * 15] == 0.5
    assert np.count_nonzero(vector) == 3


def test_points_on_a_bin_edge_fall_in_the_lower_bin_like_searchsorted():
    # 17 points spaced exactly one bin apart along x; the box is padded by 0.001 each side
    edges = np.linspace(-0.001, 16.001, 17)
    cloud = np.zeros((17, 3))
    cloud[:, 0] = edges[1:].tolist() + [8.0]  # right edges of each bin
    cloud[-1] = [0.0, 0.0, 0.0]
    cloud[:, 1:] = 8.0
    cloud[-1, 1:] = 0.0
    x_bins = np.searchsorted(np.linspace(cloud[:, 0].min() - 0.001, cloud[:, 0].max() + 0.001, 17), cloud[:, 0]) - 1
    vector = voxelise(cloud).reshape(16, 16, 16)  # axes (z, y, x)
    seen = sorted(np.nonzero(vector.sum(axis=(0, 1)))[0].tolist())
    assert seen == sorted(set(x_bins.tolist()))


def test_voxelise_batch_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(n, 3)) for n in (50, 80, 120)]
    batch = voxelise_batch(clouds)
    for row, cloud in zip(batch, clouds, strict=True):
        np.testing.assert_array_equal(row, voxelise(cloud))


def test_random_rotations_are_proper_rotations_and_seeded():
    first = random_rotations(np.random.default_rng(3), 5)
    again = random_rotations(np.random.default_rng(3), 5)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first @ first.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(first), 1.0)


def test_rotate_with_noise_keeps_the_shape_and_bounds_the_noise():
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(500, 3))
    rotation = np.eye(3)
    noisy = rotate_with_noise(cloud, rotation, rng)
    assert noisy.shape == cloud.shape
    assert np.all(np.abs(noisy - cloud) <= 0.25 * cloud.std(axis=0) + 1e-12)
    assert not np.allclose(noisy, cloud)


def test_voxelise_bins_every_point_as_searchsorted_on_the_linspace_edges():
    """The arithmetic binning agrees with the VoxelGrid definition, points on or next to an edge included."""
    rng = np.random.default_rng(7)
    corners = [[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]]  # fix the box, so the points added below stay inside it
    cloud = np.concatenate([np.clip(rng.normal(size=(3000, 3)), -1.9, 1.9) * [1.0, 0.3, 0.8], corners])
    edges = [np.linspace(-2.001, 2.001, 17)] * 3
    inner = np.stack([edges[a][1:-1] for a in range(3)], axis=1)  # 15 points exactly on inner edges ...
    cloud = np.concatenate([cloud, inner, np.nextafter(inner, np.inf), np.nextafter(inner, -np.inf)])  # ... and beside
    index = [np.clip(np.searchsorted(edges[a], cloud[:, a]) - 1, 0, 15) for a in range(3)]
    expected = np.bincount(index[0] + 16 * index[1] + 256 * index[2], minlength=4096)
    np.testing.assert_array_equal(voxelise(cloud), expected / expected.max())
