"""The voxel pictures: which rows they show, the faces they draw, and that the PNGs and the plot stage work."""

import json
import struct
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np

from mnist3d.evaluate.plotting import (
    plot_misclassified,
    plot_voxel_samples,
    sample_pairs,
    select_misclassified,
    voxel_faces,
    voxel_grid,
)
from mnist3d.io.schema import VECTORS_FILE, write_vectors
from tests.conftest import error_line, tiny_split

matplotlib.use("Agg")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert data.endswith(b"IEND\xaeB`\x82"), f"{path} is truncated"
    return struct.unpack(">II", data[16:24])


def test_misclassified_selection_takes_wrong_rows_of_the_most_frequent_pairs_and_samples_one_per_class():
    actual = np.array([4, 4, 1, 4, 7, 4, 1, 4, 3, 7, 4, 2, 1])
    predicted = np.array([9, 4, 7, 9, 1, 9, 7, 9, 3, 1, 9, 2, 7])
    # wrong rows: (4,9) x5 at 0 3 5 7 10, (1,7) x3 at 2 6 12, (7,1) x2 at 4 9
    rows = select_misclassified(actual, predicted, count=12, per_pair=None)
    assert rows.tolist() == [0, 3, 5, 7, 10, 2, 6, 12, 4, 9]
    assert (actual[rows] != predicted[rows]).all()
    # count caps the total, most frequent pair first; per_pair caps each pair, in test order within it
    assert select_misclassified(actual, predicted, count=6, per_pair=None).tolist() == [0, 3, 5, 7, 10, 2]
    assert select_misclassified(actual, predicted, count=12, per_pair=2).tolist() == [0, 3, 2, 6, 4, 9]
    # ties go by pair: (2,8) and (5,3) twice each, (2,8) first; nothing when all are right
    actual, predicted = np.array([5, 2, 5, 2, 0]), np.array([3, 8, 3, 8, 0])
    assert select_misclassified(actual, predicted, count=3).tolist() == [1, 3, 0]
    assert select_misclassified(actual, actual).tolist() == []
    # the samples picture shows the first even row (an original, before its rotated copy) of each class
    labels = np.array([3, 3, 1, 1, 3, 3, 0, 0, 9])  # row 8 has no rotated copy after it
    assert sample_pairs(labels) == {0: 6, 1: 2, 3: 0}
    assert sample_pairs(tiny_split(20).y) == {digit: 2 * digit for digit in range(10)}
    # on random predictions too, the selection follows pair frequency
    rng = np.random.default_rng(3)
    actual = rng.integers(0, 10, 400)
    predicted = np.where(rng.random(400) < 0.3, rng.integers(0, 10, 400), actual)
    rows = select_misclassified(actual, predicted, count=12, per_pair=4)
    assert len(rows) == 12 and len(set(rows.tolist())) == 12
    assert (actual[rows] != predicted[rows]).all()
    pairs = list(zip(actual.tolist(), predicted.tolist(), strict=True))
    frequency = Counter(pairs[r] for r in np.flatnonzero(actual != predicted))
    shown = [frequency[pairs[r]] for r in rows]
    assert shown == sorted(shown, reverse=True)
    assert max(Counter(pairs[r] for r in rows).values()) <= 4


def test_voxel_grid_follows_the_flat_index_and_its_faces_are_the_exposed_ones_as_axes3d_draws_them():
    vector = np.zeros(4096)
    vector[3 + 16 * 5 + 256 * 11] = 1.0  # x + 16y + 256z
    assert np.argwhere(voxel_grid(vector)).tolist() == [[3, 5, 11]]
    single = np.zeros((3, 3, 3), bool)
    single[1, 1, 1] = True
    assert len(voxel_faces(single)[0]) == 6
    double = single.copy()
    double[2, 1, 1] = True  # touching the grid's edge: that face still shows
    corners, owners = voxel_faces(double)
    assert len(corners) == 10
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1])
    outwards = corners.mean(axis=1) - (owners + 0.5)
    assert np.allclose(normals, 2 * outwards)  # unit faces: the normal is the unit vector out of the voxel
    # the faces are those that Axes3D.voxels draws
    import matplotlib.pyplot as plt

    filled = np.random.default_rng(0).random((6, 5, 4)) < 0.4
    figure = plt.figure()
    drawn = figure.add_subplot(projection="3d").voxels(filled)
    expected = {tuple(int(i) for i in cell): len(poly.get_facecolor()) for cell, poly in drawn.items()}
    plt.close(figure)
    _, owners = voxel_faces(filled)
    assert dict(Counter(map(tuple, owners.tolist()))) == expected


def test_plot_voxel_samples_and_misclassified_write_pngs(tmp_path):
    split = tiny_split(20)
    plot_voxel_samples(split.x, split.y, "Oranges", tmp_path / "samples.png")
    width, height = png_size(tmp_path / "samples.png")
    assert 600 <= width <= 2000 and 800 <= height <= 2500, (width, height)
    assert (tmp_path / "samples.png").stat().st_size > 20_000  # not a blank page
    split = tiny_split(20, seed=2)
    predicted = split.y.copy()
    predicted[[1, 5, 6, 11]] = [7, 2, 7, 7]
    plot_misclassified(split.x, split.y, predicted, "viridis", tmp_path / "misclassified.png")
    width, height = png_size(tmp_path / "misclassified.png")
    assert 600 <= width <= 2000 and 200 <= height <= 2500, (width, height)
    plot_misclassified(split.x, split.y, split.y, "viridis", tmp_path / "none.png")  # no mistakes
    assert png_size(tmp_path / "none.png")[0] > 0


def test_plot_stage_writes_every_picture_and_refuses_confusion_rows_of_another_test_split(project):
    # what the plot stage reads: DVCLive curves, confusion rows and the raw vectors file
    root = project.path
    for split in ("train", "eval"):
        for metric in ("accuracy", "loss"):
            path = root / "metrics" / "live" / "plots" / "metrics" / split / f"{metric}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"timestamp\tstep\t{metric}\n1\t0\t0.5\n2\t1\t0.6\n")
    test = tiny_split(20, seed=1)
    test.y = np.repeat(np.arange(10) % 10, 2)  # pairs of (original, rotated) rows, as in the dataset
    (root / "data" / "raw").mkdir(parents=True)
    write_vectors(root / "data" / "raw" / VECTORS_FILE, {"train": tiny_split(10), "test": test})
    predicted = test.y.copy()
    predicted[[3, 4, 9]] = [5, 5, 0]
    rows_json = [{"actual": int(a), "predicted": int(p)} for a, p in zip(test.y, predicted, strict=True)]
    (root / "metrics" / "confusion.json").write_text(json.dumps(rows_json))
    confusion = project.path / "metrics" / "confusion.json"
    rows = confusion.read_text()
    confusion.write_text(json.dumps(json.loads(rows)[:-2]))
    line = error_line(project.run("plot", timeout=120), alone=False)
    assert "does not match the test split" in line and "dvc repro evaluate" in line, line
    assert not (project.path / "plots").exists()
    confusion.write_text(rows)
    result = project.run("plot", timeout=120)
    assert result.returncode == 0, result.stderr
    names = ["accuracy.png", "confusion.png", "loss.png", "misclassified.png", "samples.png"]
    assert sorted(p.name for p in (project.path / "plots").iterdir()) == names
    for name in names:
        assert min(png_size(project.path / "plots" / name)) > 100, name
