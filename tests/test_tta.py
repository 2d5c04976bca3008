"""Test-time augmentation: the cube's symmetries on grids, and predictions averaged over rotated views."""

import numpy as np

from mnist3d.symmetry import apply_symmetry, cube_rotations, cube_symmetries
from mnist3d.tta import predict_with_views
from tests.conftest import TINY_ARCHITECTURE


def test_cube_symmetries_and_rotations():
    assert len(cube_symmetries()) == 48 and len(cube_rotations()) == 24
    grid = np.random.default_rng(0).random((1, 16, 16, 16, 1))
    images = {apply_symmetry(grid, s).tobytes() for s in cube_symmetries()}
    assert len(images) == 48  # all distinct
    np.testing.assert_array_equal(apply_symmetry(grid, cube_rotations()[0]), grid)  # identity first
    # a proper rotation keeps handedness: no rotation equals the mirror image in x
    mirrored = grid[:, :, :, ::-1]
    assert all(not np.array_equal(apply_symmetry(grid, r), mirrored) for r in cube_rotations())


def test_a_symmetry_turns_the_dataset_channels_and_keeps_the_aligned_ones():
    grids = np.random.default_rng(1).random((2, 16, 16, 16, 6)).astype(np.float32)
    turned = apply_symmetry(grids, cube_rotations()[5])
    np.testing.assert_array_equal(turned[..., 3:], grids[..., 3:])
    np.testing.assert_array_equal(turned[..., :3], apply_symmetry(grids[..., :3], cube_rotations()[5]))
    assert not np.array_equal(turned[..., :3], grids[..., :3])


def test_predictions_are_averaged_over_the_first_views():
    from mnist3d.model import build_model

    model = build_model(TINY_ARCHITECTURE)
    grids = np.random.default_rng(2).random((4, 16, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(predict_with_views(model, grids, 1, 8), model.predict(grids, verbose=0), atol=1e-6)
    views = [model.predict(apply_symmetry(grids, r), verbose=0) for r in cube_rotations()[:4]]
    averaged = predict_with_views(model, grids, 4, 8)
    np.testing.assert_allclose(averaged, np.mean(views, axis=0), atol=1e-6)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-5)
