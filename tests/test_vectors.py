"""Vector checks, and processed NPZ files: x streamed in blocks reads back exactly as np.savez would write it,
and a crafted NPZ is refused before its arrays are read."""

import io
import zipfile

import numpy as np
import pytest

from mnist3d.errors import PipelineError
from mnist3d.io.processed import read_processed, write_processed
from mnist3d.io.schema import finite_bounds


def grids(count: int, channels: int = 6) -> np.ndarray:
    return np.random.default_rng(count).random((count, 16, 16, 16, channels), dtype=np.float32)


def test_blocks_stream_into_the_same_arrays_as_savez(tmp_path):
    x, y = grids(9), np.arange(9) % 10
    write_processed(tmp_path / "streamed.npz", [x[:4], x[4:8], x[8:]], y)
    write_processed(tmp_path / "whole.npz", x, y)  # a whole array is one block
    np.savez(tmp_path / "savez.npz", x=x, y=y)
    for name in ("streamed.npz", "whole.npz", "savez.npz"):
        read_x, read_y = read_processed(tmp_path / name)
        np.testing.assert_array_equal(read_x, x)
        np.testing.assert_array_equal(read_y, y)
        assert read_x.dtype == np.float32 and read_y.dtype == y.dtype


@pytest.mark.parametrize(
    ("blocks", "message"),
    [([grids(2), grids(2, channels=3)], "does not continue"), ([grids(2)], "2 rows of x for 3 labels")],
)
def test_blocks_that_do_not_fit_the_labels_are_refused(tmp_path, blocks, message):
    with pytest.raises(ValueError, match=message):
        write_processed(tmp_path / "bad.npz", blocks, np.arange(3))


def test_finite_bounds_are_the_min_and_max_or_none_for_any_nan_or_inf():
    assert finite_bounds(np.array([[0.25, -2.0], [7.5, 0.0]])) == (-2.0, 7.5)
    for bad in (np.nan, np.inf, -np.inf):
        x = np.linspace(0, 1, 12).reshape(3, 4)
        x[2, 1] = bad
        assert finite_bounds(x) is None, bad


def npz_declaring(tmp_path, x_header: dict) -> str:
    """An NPZ whose x.npy has the header `x_header` and only a few bytes of data: what a crafted file could hold."""
    path = tmp_path / "crafted.npz"
    x_bytes = io.BytesIO()
    np.lib.format.write_array_header_2_0(x_bytes, {"fortran_order": False, **x_header})
    with zipfile.ZipFile(path, "w") as npz:
        npz.writestr("x.npy", x_bytes.getvalue() + b"\0" * 64)
        with npz.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.arange(3))
    return path


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ({"descr": "<f4", "shape": (10**8, 16, 16, 16, 6)}, "x declares 9,375,000 MB, over the 2048 MB limit on input"),
        ({"descr": "<i8", "shape": (3, 16, 16, 16, 3)}, "x: values have dtype int64, expected floats; run: dvc repro"),
        ({"descr": "<c8", "shape": (3, 16, 16, 16, 3)}, "x: values have dtype complex64, expected real numbers; run"),
    ],
)
def test_processed_arrays_are_checked_before_they_are_read(tmp_path, header, fragment):
    with pytest.raises(PipelineError) as refused:
        read_processed(npz_declaring(tmp_path, header))
    assert fragment in str(refused.value), refused.value


def test_processed_labels_out_of_range_and_a_file_that_is_not_a_zip_are_named(tmp_path):
    write_processed(tmp_path / "labels.npz", grids(2), np.array([3, 10]))
    with pytest.raises(PipelineError, match=r"labels must lie in 0\.\.9, found 3\.\.10"):
        read_processed(tmp_path / "labels.npz")
    (tmp_path / "train.npz").write_bytes(b"not a zip at all")
    with pytest.raises(
        PipelineError, match="train.npz is not a readable preprocessed NPZ .*dvc repro --force preprocess"
    ):
        read_processed(tmp_path / "train.npz")
