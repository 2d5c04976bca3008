"""The network inputs: the vectorised colour step gives the seed notebook's per-sample ScalarMappable values exactly;
slab alignment turns a rotated digit back to face x while an upright one passes nearly unchanged; and one_ahead makes
each block of them off the caller's thread, in order, passing on the maker's error."""

import threading

import matplotlib
import numpy as np
import pytest

from mnist3d.data.voxels import digit_cloud, random_rotations, rotate_with_noise, voxelise, voxelise_batch
from mnist3d.features.align import align_slabs, rotations_onto_x, slab_normals
from mnist3d.features.colour import colour_grids, colour_indices
from mnist3d.features.inputs import network_inputs
from mnist3d.parallel import one_ahead


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
    rgb = colour_grids([x], colormap)
    assert rgb.dtype == np.float32 and rgb.shape == (3, 16, 16, 16, 3)
    np.testing.assert_array_equal(rgb, seed_notebook_colour(x, colormap))


def test_indices_follow_matplotlib_flat_index_x_is_fastest_and_out_receives_the_grids():
    np.testing.assert_array_equal(colour_indices(np.array([0.0, 0.5, 0.99, 1.0]), 256), [0, 128, 253, 255])
    assert colour_indices(np.array([1.0]), 10)[0] == 9  # a colormap with fewer entries
    x = np.zeros((1, 4096))
    x[0, 1] = 1.0  # x=1, y=0, z=0 -> grid[z, y, x] = grid[0, 0, 1]
    rgb = colour_grids([x], "Oranges")
    top = matplotlib.colormaps["Oranges"](255)[:3]
    np.testing.assert_allclose(rgb[0, 0, 0, 1], top, rtol=1e-6)
    np.testing.assert_allclose(rgb[0, 1, 0, 0], matplotlib.colormaps["Oranges"](0)[:3], rtol=1e-6)
    # `out` receives the grids, and a wrong `out` is refused
    x = np.random.default_rng(2).random((4, 4096))
    out = np.zeros((4, 16, 16, 16, 3), dtype=np.float32)
    assert colour_grids([x], "Oranges", out) is out
    np.testing.assert_array_equal(out, colour_grids([x], "Oranges"))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        colour_grids([x], "Oranges", np.zeros((4, 16, 16, 16, 3), dtype=np.float64))


@pytest.mark.parametrize("colormap", ["Oranges", "twilight"])
def test_two_grids_colour_into_interleaved_channels(colormap):
    """One take gives each grid's RGB side by side: the first grid's RGB, then the second's."""
    rng = np.random.default_rng(1)
    first, second = rng.random((70, 4096)), rng.random((70, 4096))
    first[:, :2] = second[:, :2] = [0.0, 1.0]  # the table's first and last rows; no autoscaling in the seed loop
    both = colour_grids([first, second], colormap)
    assert both.shape == (70, 16, 16, 16, 6) and both.dtype == np.float32
    np.testing.assert_array_equal(both[..., :3], seed_notebook_colour(first, colormap))
    np.testing.assert_array_equal(both[..., 3:], colour_grids([second], colormap))


def box_digit() -> np.ndarray:
    """A wide '0'-like ring, so the extrusion is clearly the thinnest direction."""
    image = np.zeros((30, 30))
    image[5:25, 6:24] = 1.0
    image[9:21, 10:20] = 0.0
    return digit_cloud(image)


def test_rotations_carry_each_normal_onto_x_so_rotated_digits_come_back_facing_x_and_upright_ones_stay():
    normals = np.random.default_rng(0).normal(size=(20, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rotations = rotations_onto_x(normals)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", rotations, normals), np.tile([0, 0, 1.0], (20, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
    np.testing.assert_allclose(rotations_onto_x(np.array([[0, 0, 1.0]]))[0], np.eye(3), atol=1e-12)
    # rotated digits come back facing x, and an upright one is kept
    vector = voxelise(box_digit())[None]
    _, normal = slab_normals(vector)
    assert abs(normal[0, 2]) > 0.99  # the extrusion axis is grid x
    assert np.corrcoef(align_slabs(vector)[0], vector[0])[0, 1] > 0.9
    rng = np.random.default_rng(3)
    cloud = box_digit()
    rotated = voxelise_batch([rotate_with_noise(cloud, r, rng) for r in random_rotations(rng, 8)])
    before = np.abs(slab_normals(rotated)[1][:, 2])
    after = np.abs(slab_normals(align_slabs(rotated))[1][:, 2])
    assert before.min() < 0.9  # at least some copies were really turned away
    assert after.min() > 0.95


def test_network_inputs_add_the_aligned_copy_as_three_more_channels():
    vectors = voxelise_batch([box_digit()])
    plain = network_inputs(vectors, "Oranges", align="none")
    both = network_inputs(vectors, "Oranges", align="plane")
    assert plain.shape == (1, 16, 16, 16, 3) and both.shape == (1, 16, 16, 16, 6) and both.dtype == np.float32
    np.testing.assert_array_equal(both[..., :3], colour_grids([vectors], "Oranges"))
    np.testing.assert_array_equal(both[..., 3:], colour_grids([align_slabs(vectors)], "Oranges"))


def test_a_grid_aligns_the_same_alone_as_in_a_batch():
    """Predict aligns one grid, preprocess thousands: float noise in the batched sums must not flip an axis."""
    rng = np.random.default_rng(5)
    upright = voxelise(box_digit()).reshape(16, 16, 16)
    # Extruded along y or z, the slab normal has an x component that is 0 up to float noise.
    sideways = [upright.transpose(order).reshape(-1) for order in ((0, 2, 1), (2, 1, 0))]
    rotated = voxelise_batch([rotate_with_noise(box_digit(), r, rng) for r in random_rotations(rng, 60)])
    batch = np.concatenate([rotated[:30], np.stack(sideways * 3), rotated[30:]])
    for mode in ("plane", "axes"):
        together = align_slabs(batch, mode)
        alone = np.concatenate([align_slabs(row[None], mode) for row in batch])
        np.testing.assert_array_equal(alone, together)


def test_one_ahead_yields_every_item_in_order_off_the_caller_thread_and_passes_on_the_makers_error():
    makers = []

    def items(error=None):
        for number in range(5):
            makers.append(threading.get_ident())
            yield number
        if error:
            raise error

    assert list(one_ahead(items())) == [0, 1, 2, 3, 4]
    assert threading.get_ident() not in makers
    made = one_ahead(items(OSError("disk gone")))
    assert [next(made) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(OSError, match="disk gone"):
        next(made)
