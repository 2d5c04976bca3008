"""Vector checks, and processed NPZ files: x streamed in blocks reads back exactly as np.savez would write it."""

import numpy as np
import pytest

from mnist3d.vectors import finite_bounds, read_processed, write_processed


def grids(count: int, channels: int = 6) -> np.ndarray:
    return np.random.default_rng(count).random((count, 16, 16, 16, channels), dtype=np.float32)


def test_blocks_stream_into_the_same_arrays_as_savez(tmp_path):
    x, y = grids(9), np.arange(9) % 10
    write_processed(tmp_path / "streamed.npz", [x[:4], x[4:8], x[8:]], y)
    np.savez(tmp_path / "savez.npz", x=x, y=y)
    for name in ("streamed.npz", "savez.npz"):
        read_x, read_y = read_processed(tmp_path / name)
        np.testing.assert_array_equal(read_x, x)
        np.testing.assert_array_equal(read_y, y)
        assert read_x.dtype == np.float32 and read_y.dtype == y.dtype


def test_a_whole_array_is_one_block(tmp_path):
    x, y = grids(3, channels=3), np.array([1, 2, 3])
    write_processed(tmp_path / "one.npz", x, y)
    np.testing.assert_array_equal(read_processed(tmp_path / "one.npz")[0], x)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [([grids(2), grids(2, channels=3)], "does not continue"), ([grids(2)], "2 rows of x for 3 labels")],
)
def test_blocks_that_do_not_fit_the_labels_are_refused(tmp_path, blocks, message):
    with pytest.raises(ValueError, match=message):
        write_processed(tmp_path / "bad.npz", blocks, np.arange(3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_bounds_are_none_for_any_nan_or_inf(bad):
    x = np.linspace(0, 1, 12).reshape(3, 4)
    x[2, 1] = bad
    assert finite_bounds(x) is None


def test_finite_bounds_are_the_min_and_max():
    assert finite_bounds(np.array([[0.25, -2.0], [7.5, 0.0]])) == (-2.0, 7.5)
