"""The vectorised colour step gives the seed notebook's per-sample ScalarMappable values exactly."""

import matplotlib
import numpy as np
import pytest

from mnist3d.colour import colour_grids, colour_indices, colour_voxels


def seed_notebook_colour(x: np.ndarray, colormap: str) -> np.ndarray:
    """The notebook's loop: ScalarMappable.to_rgba per sample, alpha dropped."""
    from matplotlib.cm import ScalarMappable

    return np.asarray(
        [ScalarMappable(cmap=colormap).to_rgba(row)[:, :-1].reshape(16, 16, 16, 3) for row in x], dtype=np.float32
    )


@pytest.mark.parametrize("colormap", ["Oranges", "viridis", "twilight"])  # twilight has 510 entries
def test_matches_the_seed_loop(colormap):
    rng = np.random.default_rng(0)
    x = rng.random((3, 4096))
    x[:, 0], x[:, 1] = 0.0, 1.0  # each row spans [0, 1], as in the dataset, so autoscaling is the identity
    x[:, 2:6] = [0.5, 255 / 256, 1 / 256, 0.999999]  # values on and near LUT boundaries
    rgb = colour_voxels(x, colormap)
    assert rgb.dtype == np.float32 and rgb.shape == (3, 16, 16, 16, 3)
    np.testing.assert_array_equal(rgb, seed_notebook_colour(x, colormap))


def test_indices_follow_matplotlib_including_one_in_the_last_entry():
    np.testing.assert_array_equal(colour_indices(np.array([0.0, 0.5, 0.99, 1.0]), 256), [0, 128, 253, 255])
    assert colour_indices(np.array([1.0]), 10)[0] == 9  # a colormap with fewer entries


def test_reshape_puts_flat_index_x_fastest():
    x = np.zeros((1, 4096))
    x[0, 1] = 1.0  # x=1, y=0, z=0 -> grid[z, y, x] = grid[0, 0, 1]
    rgb = colour_voxels(x, "Oranges")
    top = matplotlib.colormaps["Oranges"](255)[:3]
    np.testing.assert_allclose(rgb[0, 0, 0, 1], top, rtol=1e-6)
    np.testing.assert_allclose(rgb[0, 1, 0, 0], matplotlib.colormaps["Oranges"](0)[:3], rtol=1e-6)


@pytest.mark.parametrize("colormap", ["Oranges", "twilight"])
def test_two_grids_colour_into_interleaved_channels(colormap):
    """One take gives each grid's RGB side by side: the first grid's RGB, then the second's."""
    rng = np.random.default_rng(1)
    first, second = rng.random((70, 4096)), rng.random((70, 4096))
    first[:, :2] = second[:, :2] = [0.0, 1.0]  # the table's first and last rows; no autoscaling in the seed loop
    both = colour_grids([first, second], colormap)
    assert both.shape == (70, 16, 16, 16, 6) and both.dtype == np.float32
    np.testing.assert_array_equal(both[..., :3], seed_notebook_colour(first, colormap))
    np.testing.assert_array_equal(both[..., 3:], colour_voxels(second, colormap))


def test_out_receives_the_grids_and_a_wrong_out_is_refused():
    x = np.random.default_rng(2).random((4, 4096))
    out = np.zeros((4, 16, 16, 16, 3), dtype=np.float32)
    assert colour_voxels(x, "Oranges", out) is out
    np.testing.assert_array_equal(out, colour_voxels(x, "Oranges"))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        colour_voxels(x, "Oranges", np.zeros((4, 16, 16, 16, 3), dtype=np.float64))
