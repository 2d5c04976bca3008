"""The synthetic source: Kaggle's schema, value ranges, determinism, and the original/rotated pairing."""

import h5py
import numpy as np
import pytest

from mnist3d import synthetic
from mnist3d.readers import read_vectors
from mnist3d.synthetic import render_digit, write_dataset
from mnist3d.voxels import digit_cloud, voxelise


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    write_dataset(folder, train_digits=12, test_digits=6, seed=7)
    return folder


def test_schema_matches_kaggle(dataset):
    with h5py.File(dataset / "full_dataset_vectors.h5") as h5:
        assert {k: (h5[k].shape, h5[k].dtype) for k in h5} == {
            "X_train": ((24, 4096), np.float64),
            "y_train": ((24,), np.int64),
            "X_test": ((12, 4096), np.float64),
            "y_test": ((12,), np.int64),
        }
    with h5py.File(dataset / "train_point_clouds.h5") as h5:
        assert len(h5) == 12
        group = h5["0"]
        assert group["img"].shape == (30, 30) and group["points"].shape[1] == 3 and "label" in group.attrs


def test_values_lie_in_unit_range_with_row_max_one(dataset):
    splits = read_vectors(dataset / "full_dataset_vectors.h5")  # also runs the schema checks
    for split in splits.values():
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


def test_same_seed_same_data_other_seed_other_data(dataset, tmp_path):
    write_dataset(tmp_path, train_digits=12, test_digits=6, seed=7)
    same = read_vectors(tmp_path / "full_dataset_vectors.h5")["train"]
    original = read_vectors(dataset / "full_dataset_vectors.h5")["train"]
    np.testing.assert_array_equal(same.x, original.x)
    np.testing.assert_array_equal(same.y, original.y)
    write_dataset(tmp_path, train_digits=12, test_digits=6, seed=8)
    assert not np.array_equal(read_vectors(tmp_path / "full_dataset_vectors.h5")["train"].x, original.x)


def test_worker_processes_write_the_same_data_as_one_process(tmp_path, monkeypatch):
    """Each chunk of digits has its own seed, so how many processes make the chunks changes nothing."""
    monkeypatch.setattr(synthetic, "CHUNK", 5)  # 12 + 6 digits in five chunks
    made = {}
    for cores in (1, 2):  # in this process, then two spawned workers
        monkeypatch.setattr(synthetic, "usable_cores", lambda cores=cores: cores)
        folder = tmp_path / str(cores)
        folder.mkdir()
        write_dataset(folder, train_digits=12, test_digits=6, seed=7)
        made[cores] = read_vectors(folder / "full_dataset_vectors.h5")
        with h5py.File(folder / "test_point_clouds.h5") as h5:
            assert sorted(h5, key=int) == [str(i) for i in range(6)]
    for split in ("train", "test"):
        np.testing.assert_array_equal(made[1][split].x, made[2][split].x)
        np.testing.assert_array_equal(made[1][split].y, made[2][split].y)


def test_rendered_digits_look_like_mnist():
    image = render_digit(7, np.random.default_rng(0))
    assert image.shape == (28, 28) and image.min() >= 0.0 and image.max() <= 1.0
    assert 0.05 < (image > 0).mean() < 0.5  # a stroke, not empty and not a blob
    assert image[0].max() == 0 and image[-1].max() == 0  # the 20x20 box leaves a margin
