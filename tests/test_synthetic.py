"""The dataset's procedure: point-cloud geometry and VoxelGrid on tiny hand-made inputs; then the synthetic source,
with Kaggle's schema and value ranges, determinism, and the original/rotated pairing."""

import h5py
import numpy as np
import pytest

from mnist3d.data import synthetic
from mnist3d.data.synthetic import render_digit, write_dataset
from mnist3d.data.voxels import digit_cloud, prism_cloud, random_rotations, rotate_with_noise, voxelise, voxelise_batch
from mnist3d.io.readers import read_vectors


def test_prism_cloud_samples_faces_and_only_open_sides_and_the_digit_cloud_is_centred_and_upright():
    image = np.zeros((4, 4))
    image[1, 1] = image[1, 2] = 1.0  # two neighbours: the shared side is hidden
    points = prism_cloud(image)
    # 2 pixels x (front + back 5x5) + 6 open sides x 5x30
    assert len(points) == 2 * 50 + 6 * 150
    assert points[:, 2].min() == -3.0 and points[:, 2].max() == 3.0
    assert points[:, 0].min() == 0.5 and points[:, 0].max() == 1.5  # x is the row, +-0.5
    assert points[:, 1].min() == 0.5 and points[:, 1].max() == 2.5  # y is the column
    # a digit cloud is centred, of unit extent, and upright
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
    clouds = [np.random.default_rng(0).normal(size=(n, 3)) for n in (50, 80, 120)]  # a batch: as one at a time
    for row, cloud in zip(voxelise_batch(clouds), clouds, strict=True):
        np.testing.assert_array_equal(row, voxelise(cloud))


def test_random_rotations_are_proper_and_seeded_and_the_noise_keeps_the_shape_within_bounds():
    first = random_rotations(np.random.default_rng(3), 5)
    np.testing.assert_array_equal(first, random_rotations(np.random.default_rng(3), 5))
    np.testing.assert_allclose(first @ first.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(first), 1.0)
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(500, 3))
    noisy = rotate_with_noise(cloud, np.eye(3), rng)
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


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    write_dataset(folder, train_digits=12, test_digits=6, seed=7)
    return folder


def test_schema_and_value_ranges_match_kaggle(dataset):
    with h5py.File(dataset / "full_dataset_vectors.h5") as h5:
        schema = {"X_train": ((24, 4096), "f8"), "y_train": ((24,), "i8"), "X_test": ((12, 4096), "f8")}
        assert {k: (h5[k].shape, h5[k].dtype) for k in h5} == schema | {"y_test": ((12,), "i8")}
    with h5py.File(dataset / "train_point_clouds.h5") as h5:
        assert len(h5) == 12
        group = h5["0"]
        assert group["img"].shape == (30, 30) and group["points"].shape[1] == 3 and "label" in group.attrs
    for split in read_vectors(dataset / "full_dataset_vectors.h5").values():  # also runs the schema checks
        assert split.x.min() == 0.0
        np.testing.assert_array_equal(split.x.max(axis=1), 1.0)


def test_even_rows_are_the_stored_clouds_and_odd_rows_their_rotated_copies(dataset):
    splits = read_vectors(dataset / "full_dataset_vectors.h5")
    with h5py.File(dataset / "train_point_clouds.h5") as h5:
        for index in range(12):
            group = h5[str(index)]
            np.testing.assert_array_equal(voxelise(group["points"][:]), splits["train"].x[2 * index])
            np.testing.assert_array_equal(digit_cloud(group["img"][:]), group["points"][:])
            assert splits["train"].y[2 * index] == splits["train"].y[2 * index + 1] == group.attrs["label"]
    originals, rotated = splits["train"].x[0::2], splits["train"].x[1::2]
    assert not np.array_equal(originals, rotated)
    # rotation tilts the thin slab across the grid, so the rotated copies fill more voxels
    assert (rotated > 0).mean() > (originals > 0).mean()


def test_the_seed_alone_decides_the_data_however_many_processes_make_it(tmp_path, monkeypatch):
    """Each chunk of digits has its own seed: how many processes make the chunks changes nothing; another seed does."""
    monkeypatch.setattr(synthetic, "CHUNK", 5)  # 12 + 6 digits in five chunks
    made = {}
    for cores, seed in ((1, 7), (2, 7), (1, 8)):  # in this process, then two spawned workers
        monkeypatch.setattr(synthetic, "usable_cores", lambda cores=cores: cores)
        folder = tmp_path / f"{cores}-{seed}"
        folder.mkdir()
        write_dataset(folder, train_digits=12, test_digits=6, seed=seed)
        made[cores, seed] = read_vectors(folder / "full_dataset_vectors.h5")
        with h5py.File(folder / "test_point_clouds.h5") as h5:
            assert sorted(h5, key=int) == [str(i) for i in range(6)]
    for split in ("train", "test"):
        np.testing.assert_array_equal(made[1, 7][split].x, made[2, 7][split].x)
        np.testing.assert_array_equal(made[1, 7][split].y, made[2, 7][split].y)
    assert not np.array_equal(made[1, 8]["train"].x, made[1, 7]["train"].x)


def test_rendered_digits_look_like_mnist():
    image = render_digit(7, np.random.default_rng(0))
    assert image.shape == (28, 28) and image.min() >= 0.0 and image.max() <= 1.0
    assert 0.05 < (image > 0).mean() < 0.5  # a stroke, not empty and not a blob
    assert image[0].max() == 0 and image[-1].max() == 0  # the 20x20 box leaves a margin
