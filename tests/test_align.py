"""Slab alignment: a rotated digit comes back facing x; an upright one passes nearly unchanged."""

import numpy as np

from mnist3d.align import align_slabs, rotations_onto_x, slab_normals
from mnist3d.colour import colour_voxels
from mnist3d.inputs import network_inputs
from mnist3d.voxels import digit_cloud, random_rotations, rotate_with_noise, voxelise, voxelise_batch


def box_digit() -> np.ndarray:
    """A wide '0'-like ring, so the extrusion is clearly the thinnest direction."""
    image = np.zeros((30, 30))
    image[5:25, 6:24] = 1.0
    image[9:21, 10:20] = 0.0
    return digit_cloud(image)


def test_rotations_carry_each_normal_onto_x():
    normals = np.random.default_rng(0).normal(size=(20, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rotations = rotations_onto_x(normals)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", rotations, normals), np.tile([0, 0, 1.0], (20, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
    np.testing.assert_allclose(rotations_onto_x(np.array([[0, 0, 1.0]]))[0], np.eye(3), atol=1e-12)


def test_upright_digit_already_faces_x_and_is_kept():
    vector = voxelise(box_digit())[None]
    _, normal = slab_normals(vector)
    assert abs(normal[0, 2]) > 0.99  # the extrusion axis is grid x
    aligned = align_slabs(vector)
    assert np.corrcoef(aligned[0], vector[0])[0, 1] > 0.9


def test_rotated_digits_come_back_facing_x():
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
    np.testing.assert_array_equal(both[..., :3], colour_voxels(vectors, "Oranges"))
    np.testing.assert_array_equal(both[..., 3:], colour_voxels(align_slabs(vectors), "Oranges"))


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
