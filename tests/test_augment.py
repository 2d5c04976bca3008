"""Augmentation: fresh rotated copies, random cube symmetries and the per-epoch batches in training; at test time,
the cube's symmetries on grids and predictions averaged over rotated views."""

import numpy as np
import pytest

from mnist3d.data.voxels import digit_cloud, random_rotations, rotate_with_noise, voxelise_batch
from mnist3d.errors import PipelineError
from mnist3d.evaluate.tta import predict_with_views
from mnist3d.features.symmetry import apply_symmetry, cube_rotations, cube_symmetries
from mnist3d.io.processed import pack_clouds, write_packed_clouds
from mnist3d.train.augment import RotatedCopies, fresh_copies, random_symmetries, read_training_clouds
from mnist3d.train.batches import EpochBatches
from tests.conftest import TINY_ARCHITECTURE

PREPROCESS = {"colormap": "Oranges", "align": "none"}


def bar_image(row: int) -> np.ndarray:
    image = np.zeros((30, 30))
    image[5:25, 12:15] = 1.0
    image[row, 8:20] = 1.0  # a cross-bar makes each digit-like shape distinct
    return image


@pytest.fixture(scope="module")
def clouds():
    return [digit_cloud(bar_image(r)) for r in (6, 12, 20)]


def packed(clouds, labels=None):
    return pack_clouds([np.ascontiguousarray(c.T) for c in clouds], np.zeros(len(clouds)) if labels is None else labels)


def test_rotated_copies_are_valid_seeded_vectors_distributed_as_the_exact_generator_makes_them(clouds):
    make = RotatedCopies(packed(clouds), np.arange(3))
    first, again, other = (make(np.random.default_rng(seed)) for seed in (5, 5, 6))
    assert first.shape == (3, 4096)
    np.testing.assert_array_equal(first.max(axis=1), 1.0)
    assert first.min() == 0.0
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # the fast path and the dataset procedure give grids with the same occupancy, over many draws.
    many = clouds * 40
    fast = RotatedCopies(packed(clouds), np.tile(np.arange(3), 40))(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    exact = voxelise_batch(
        [rotate_with_noise(c, r, rng) for c, r in zip(many, random_rotations(rng, len(many)), strict=True)]
    )
    assert (fast > 0).mean() == pytest.approx((exact > 0).mean(), rel=0.05)
    assert fast.mean() == pytest.approx(exact.mean(), rel=0.05)


def collect(batches: EpochBatches, epoch: int = 0):
    grids, labels = zip(*batches.batches_of(epoch), strict=True)
    return np.concatenate(grids), np.concatenate(labels)


def test_epoch_batches_cover_fixed_and_fresh_samples_once_repeat_by_seed_and_prepare_no_epoch_beyond_the_last():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1, 1) * np.ones((1, 16, 16, 16, 3), np.float32)
    y = np.arange(10) % 10

    def make_fresh(rng):
        return np.full((4, 16, 16, 16, 3), 100 + rng.integers(1000), dtype=np.float32)

    fresh_labels = np.array([1, 2, 3, 4])
    batches = EpochBatches(x, y, 4, seed=0, make_fresh=make_fresh, fresh_labels=fresh_labels)
    assert batches.size == 14 and batches.steps() == 4
    grids, labels = collect(batches)
    assert len(grids) == 14
    fixed = grids[:, 0, 0, 0, 0] < 100
    assert sorted(grids[fixed, 0, 0, 0, 0].tolist()) == list(range(10))
    assert sorted(labels[~fixed].argmax(axis=1).tolist()) == [1, 2, 3, 4]
    np.testing.assert_array_equal(labels[fixed].argmax(axis=1), grids[fixed, 0, 0, 0, 0].astype(int) % 10)
    second, _ = collect(batches, 1)
    replay = EpochBatches(x, y, 4, seed=0, make_fresh=make_fresh, fresh_labels=fresh_labels)
    np.testing.assert_array_equal(collect(replay)[0], grids)
    assert not np.array_equal(second, grids)  # a new epoch: new fresh copies and order
    # with `epochs` known, no epoch is prepared beyond the last, and each epoch is made once
    prepared = []

    def counted_fresh(rng):
        prepared.append(1)
        return np.zeros((2, 16, 16, 16, 3), np.float32)

    x, fresh_labels = np.zeros((4, 16, 16, 16, 3), np.float32), np.array([0, 1])
    batches = EpochBatches(x, np.arange(4), 4, seed=0, make_fresh=counted_fresh, fresh_labels=fresh_labels, epochs=2)
    collect(batches, 0)
    collect(batches, 0)  # asked for twice (a distribution strategy may look at a batch first): made once
    collect(batches, 1)
    assert len(prepared) == 2  # epochs 0 and 1, not a third
    # the stream tf.data reads is every epoch in turn from the first, and ends after the last
    streamed = EpochBatches(x, np.arange(4), 4, seed=0, make_fresh=counted_fresh, fresh_labels=fresh_labels, epochs=3)
    assert [len(grids) for grids, _ in streamed()] == [4, 2] * 3
    assert [len(grids) for grids, _ in streamed()] == [4, 2] * 3  # a second stream starts over


def test_clouds_pack_into_float16_at_unit_extent_and_read_back_checked(clouds, tmp_path):
    stored = packed(clouds, labels=[4, 5, 6])
    write_packed_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", stored)
    y = np.repeat([4, 5, 6], 2)
    read = read_training_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", y)
    assert read.points.dtype == np.int16 and isinstance(read.points, np.memmap)
    for index, cloud in enumerate(clouds):
        back = read.cloud(index).astype(np.float64)
        centred = cloud.T - cloud.T.mean(axis=1, keepdims=True)
        extent = (centred.max(axis=1) - centred.min(axis=1)).max()
        np.testing.assert_allclose(back, centred / extent, atol=2e-5)  # steps of 1/32767 of the extent
        np.testing.assert_allclose(read.covariances[index], np.cov(back, bias=True), atol=1e-9)
    with pytest.raises(PipelineError, match="cloud 1 is labelled 5 but vectors 2 and 3 are 9"):
        read_training_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", np.repeat([4, 9, 6], 2))
    stored.covariances[2] = -np.eye(3)  # no cloud has a negative spread: a copy's noise would be NaN
    write_packed_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", stored)
    with pytest.raises(PipelineError, match="clouds.npz does not describe the clouds in .*points.npy"):
        read_training_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", y)
    write_packed_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", pack_clouds([], np.empty(0)))
    with pytest.raises(PipelineError, match="no point clouds .* -S train.augment=cube"):
        read_training_clouds(tmp_path / "points.npy", tmp_path / "clouds.npz", y)


def test_jittered_and_upright_copies_turn_each_digit_in_its_own_plane(clouds):
    """A turn about x (the upright digit's normal) keeps each digit in its slab; unturned upright copies are the even
    rows' voxel grids, but for points exactly on a bin edge (this bar digit has many), which floor division binning
    puts one bin up."""
    stored = packed(clouds)
    upright = RotatedCopies(stored, np.arange(3), upright=True)(np.random.default_rng(0))
    exact = voxelise_batch([stored.cloud(i).astype(np.float64).T for i in range(3)])
    assert (upright == exact).mean() > 0.95 and np.array_equal(upright > 0, exact > 0)
    turned = RotatedCopies(stored, np.arange(3), jitter_degrees=20, upright=True)(np.random.default_rng(0))
    grids = turned.reshape(3, 16, 16, 16)  # (z, y, x): the slab's thickness along x is the same after the turn
    np.testing.assert_array_equal(grids.sum(axis=(1, 2)) > 0, upright.reshape(3, 16, 16, 16).sum(axis=(1, 2)) > 0)
    assert not np.array_equal(turned, upright)
    slanted = RotatedCopies(stored, np.arange(3), jitter_slant=0.3, upright=True)(np.random.default_rng(0))
    assert not np.array_equal(slanted, upright) and not np.array_equal(slanted, turned)
    params = {"augment": "clouds", "copies_per_epoch": 2, "upright_copies": 1, "jitter_degrees": 10, "jitter_slant": 0}
    make, labels = fresh_copies(params, None, None, np.array([0, 1, 4, 5]), packed(clouds, [7, 8, 9]), PREPROCESS)
    np.testing.assert_array_equal(labels, [7, 9, 7, 9, 7, 9])  # clouds 0 and 2: two rotated copies, one upright
    assert make(np.random.default_rng(0)).shape == (6, 16, 16, 16, 3)


def test_cube_symmetries_keep_each_grid_content_and_turn_the_rotated_rows_of_the_training_pairs():
    grids = np.random.default_rng(0).random((6, 16, 16, 16, 3)).astype(np.float32)
    moved = random_symmetries(grids, np.random.default_rng(1))
    np.testing.assert_allclose(np.sort(moved.reshape(6, -1), axis=1), np.sort(grids.reshape(6, -1), axis=1))
    assert not np.array_equal(moved, grids)
    x = np.random.default_rng(0).random((8, 16, 16, 16, 3)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    train_rows = np.array([0, 1, 4, 5, 6, 7])
    make, labels = fresh_copies({"augment": "cube", "copies_per_epoch": 1}, x, y, train_rows, None, PREPROCESS)
    np.testing.assert_array_equal(labels, [0, 2, 3])
    copies = make(np.random.default_rng(0))
    for copy, row in zip(copies, (1, 5, 7), strict=True):
        np.testing.assert_allclose(np.sort(copy.ravel()), np.sort(x[row].ravel()))
    assert fresh_copies({"augment": "none"}, x, y, train_rows, None, PREPROCESS) == (None, None)


def test_cube_symmetries_turn_the_dataset_channels_and_predictions_are_averaged_over_the_first_views():
    assert len(cube_symmetries()) == 48 and len(cube_rotations()) == 24
    grid = np.random.default_rng(0).random((1, 16, 16, 16, 1))
    images = {apply_symmetry(grid, s).tobytes() for s in cube_symmetries()}
    assert len(images) == 48  # all distinct
    np.testing.assert_array_equal(apply_symmetry(grid, cube_rotations()[0]), grid)  # identity first
    # a proper rotation keeps handedness: no rotation equals the mirror image in x
    mirrored = grid[:, :, :, ::-1]
    assert all(not np.array_equal(apply_symmetry(grid, r), mirrored) for r in cube_rotations())
    # a symmetry turns the dataset's channels and keeps the aligned ones
    grids = np.random.default_rng(1).random((2, 16, 16, 16, 6)).astype(np.float32)
    turned = apply_symmetry(grids, cube_rotations()[5])
    np.testing.assert_array_equal(turned[..., 3:], grids[..., 3:])
    np.testing.assert_array_equal(turned[..., :3], apply_symmetry(grids[..., :3], cube_rotations()[5]))
    assert not np.array_equal(turned[..., :3], grids[..., :3])
    # predictions are averaged over the first views
    from mnist3d.train.model import build_model

    model = build_model(TINY_ARCHITECTURE)
    grids = np.random.default_rng(2).random((4, 16, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(
        predict_with_views(model, grids, 1, 8, "tiny"), model.predict(grids, verbose=0), atol=1e-6
    )
    views = [model.predict(apply_symmetry(grids, r), verbose=0) for r in cube_rotations()[:4]]
    averaged = predict_with_views(model, grids, 4, 8, "tiny")
    np.testing.assert_allclose(averaged, np.mean(views, axis=0), atol=1e-6)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-5)
