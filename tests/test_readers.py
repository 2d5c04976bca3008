"""The one point-cloud reader: the same clouds as h5py gives, whatever the layout, and in group order."""

import h5py
import numpy as np
import pytest

from mnist3d.errors import PipelineError
from mnist3d.io.readers import read_point_clouds

LAYOUTS = {
    "kaggle-gzip-column-chunks": {"chunks": (7, 1), "compression": "gzip"},
    "gzip-row-chunks": {"chunks": (5, 3), "compression": "gzip"},
    "gzip-two-column-chunks": {"chunks": (4, 2), "compression": "gzip"},
    "gzip-big-endian": {"chunks": (7, 1), "compression": "gzip", "dtype": ">f8"},
    "gzip-float32": {"chunks": (7, 1), "compression": "gzip", "dtype": "<f4"},
    "shuffle-and-gzip": {"chunks": (7, 1), "compression": "gzip", "shuffle": True},
    "contiguous": {},
}


def write_cloud_file(path, clouds, labels, **layout):
    with h5py.File(path, "w") as h5:
        for i in np.random.default_rng(0).permutation(len(clouds)):  # groups created out of order
            group = h5.create_group(str(i))
            group.create_dataset("points", data=clouds[i], **layout)
            group.attrs["label"] = labels[i]
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clouds_come_back_axis_major_in_group_order_whatever_the_layout(tmp_path, layout):
    rng = np.random.default_rng(1)
    clouds = [rng.normal(size=(n, 3)) * 10 for n in (7, 16, 7, 20, 33, 8, 9, 10, 11, 12, 13)]
    path = write_cloud_file(tmp_path / "c.h5", clouds, np.arange(11) % 10, **LAYOUTS[layout])
    stored = [np.asarray(c, dtype=LAYOUTS[layout].get("dtype", "<f8")) for c in clouds]
    got = read_point_clouds(path)[0]
    assert len(got) == 11
    for cloud, expected in zip(got, stored, strict=True):
        assert cloud.dtype == np.float32 and cloud.flags.c_contiguous and cloud.shape == (3, len(expected))
        np.testing.assert_array_equal(cloud, expected.astype(np.float32).T)
    exact, labels = read_point_clouds(path, rows=[10, 2], dtype=np.float64)
    np.testing.assert_array_equal(exact[0], stored[10].astype(np.float64).T)
    np.testing.assert_array_equal(exact[1], stored[2].astype(np.float64).T)
    assert list(labels) == list(np.arange(11) % 10)


def test_a_chunk_never_written_reads_as_h5py_fills_it_and_a_damaged_chunk_or_a_missing_group_is_named(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as h5:
        points = h5.create_group("0").create_dataset("points", shape=(20, 3), chunks=(7, 1), compression="gzip")
        points[:7, 0] = np.arange(7)
        h5["0"].attrs["label"] = 1
    cloud = read_point_clouds(tmp_path / "c.h5")[0][0]
    expected = np.zeros((3, 20), np.float32)
    expected[0, :7] = np.arange(7)
    np.testing.assert_array_equal(cloud, expected)
    # a damaged chunk is named
    path = write_cloud_file(tmp_path / "c.h5", [np.ones((7, 3))], [1], chunks=(7, 1), compression="gzip")
    with h5py.File(path, "a") as h5:
        h5["0/points"].id.write_direct_chunk((0, 1), b"\x78\x9c not deflate")
    with pytest.raises(PipelineError, match="group 0 points"):
        read_point_clouds(path)
    # a group missing in the numbering is named
    path = write_cloud_file(tmp_path / "c.h5", [np.ones((4, 3))] * 2, [1, 2])
    with h5py.File(path, "a") as h5:
        h5.move("1", "7")
    with pytest.raises(PipelineError, match="group 1 is missing or not a group"):
        read_point_clouds(path)
