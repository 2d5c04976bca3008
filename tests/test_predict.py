"""python -m mnist3d predict: every input goes through the training preprocessing and a tiny saved model."""

import csv
import os
import stat

import numpy as np
import pytest

from mnist3d.__main__ import main
from mnist3d.data.voxels import digit_cloud, random_rotations, rotate_with_noise, voxelise
from mnist3d.evaluate.predict import CSV_COLUMNS, vector_blocks
from mnist3d.features.inputs import network_inputs
from mnist3d.io.formats import read_input
from mnist3d.io.schema import Split, write_vectors
from mnist3d.params import load_section
from tests.conftest import ROOT, TINY_ARCHITECTURE, error_line, predict_cli, tiny_split, written

PREPROCESS = load_section("preprocess", ROOT / "params.yaml")  # a scratch project's params are a copy of these


def expected_probabilities(model, vectors):
    """What the model says on the preprocess stage's own inputs for these vectors."""
    x = network_inputs(np.asarray(vectors, dtype=np.float64), PREPROCESS["colormap"], PREPROCESS["align"])
    return model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny untrained model for the current params' channels, its output layer scaled so rows differ clearly, saved
    with the params' preprocessing and one view."""
    import keras

    from mnist3d.train.model import BuiltWith, build_model, save_model

    keras.utils.set_random_seed(0)
    channels = network_inputs(tiny_split(1).x, PREPROCESS["colormap"], PREPROCESS["align"]).shape[-1]
    model = build_model(TINY_ARCHITECTURE, input_shape=(16, 16, 16, channels))
    output = model.get_layer("digit")
    kernel, bias = output.get_weights()
    output.set_weights([kernel * 40, bias])
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(model, path, BuiltWith(PREPROCESS["colormap"], PREPROCESS["align"], 1))
    return path, keras.saving.load_model(path, safe_mode=True)


@pytest.fixture
def workdir(project, monkeypatch):
    monkeypatch.chdir(project.path)
    return project


def run_cli(*args):
    try:
        main(["predict", *map(str, args)])
    except SystemExit as exit_:
        return exit_.code
    return 0


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def predicted(model_path, *args):
    """The CSV rows of `predict ARGS --model MODEL_PATH`, run in this process, after checking that it succeeded."""
    assert run_cli(*args, "--model", model_path, "--csv", "scored.csv") == 0
    return read_csv("scored.csv")


def assert_rows_match(rows, index, probabilities, labels=None):
    """CSV rows hold the index, argmax and the three most probable classes with their probabilities."""
    assert [int(r["index"]) for r in rows] == list(index)
    for row, p, position in zip(rows, probabilities, range(len(rows)), strict=True):
        order = np.argsort(-p)[:3]
        assert int(row["predicted"]) == order[0]
        assert [int(row[f"top{k}"]) for k in (1, 2, 3)] == list(order)
        got = [float(row[f"top{k}_probability"]) for k in (1, 2, 3)]
        np.testing.assert_allclose(got, p[order], atol=2e-6)
        assert row["actual"] == ("" if labels is None else str(labels[position]))


def sample_cloud(seed=0):
    """A digit-like cloud as the dataset builds it, then rotated with noise, so it is not axis-aligned."""
    image = np.zeros((10, 10))
    image[2:8, 4:6] = 1
    image[2, 3:7] = 1
    rng = np.random.default_rng(seed)
    return rotate_with_noise(digit_cloud(image), random_rotations(rng, 1)[0], rng) * 3.0 + 5.0


def test_vectors_file_rows_match_model_predict_on_network_inputs(workdir, tiny_model, capsys):
    path, model = tiny_model
    test = tiny_split(12, seed=3)
    write_vectors(workdir.path / "v.h5", {"train": tiny_split(20), "test": test})
    (workdir.path / "out").mkdir()
    written(workdir.path / "out" / "predictions.csv", "stale\n")  # an older CSV there: it is replaced atomically
    assert run_cli("v.h5", "--model", path, "--csv", "out/predictions.csv") == 0  # replaces the stale file
    expected = expected_probabilities(model, test.x)
    assert np.ptp(expected, axis=0).max() > 1e-4, "rows should get different probabilities, far beyond the tolerance"
    rows = read_csv(workdir.path / "out/predictions.csv")
    assert list(rows[0]) == CSV_COLUMNS
    assert_rows_match(rows, range(12), expected, test.y)
    assert sorted(p.name for p in (workdir.path / "out").iterdir()) == ["predictions.csv"]  # no temp left behind
    lines = capsys.readouterr().out.splitlines()
    for i in range(12):
        order = np.argsort(-expected[i])[:3]
        assert lines[1 + i].startswith(f"row {i}: predicted {order[0]}  top-3: {order[0]} {expected[i, order[0]]:.3f}")
        assert lines[1 + i].endswith(f"(actual {test.y[i]})")
    correct = int((expected.argmax(axis=1) == test.y).sum())
    assert f"({correct} of 12 correct)" in lines[13]
    # --split and --row pick one row of the file
    train = tiny_split(20, seed=5)
    write_vectors(workdir.path / "v.h5", {"train": train, "test": tiny_split(4, seed=1)})
    rows = predicted(path, "v.h5", "--split", "train", "--row", 7)
    expected = expected_probabilities(model, train.x)
    assert_rows_match(rows, [7], expected[7:8], train.y[7:8])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("predict: v.h5 X_train, 1 row(s)")
    assert out[1].startswith(f"row 7: predicted {expected[7].argmax()} ")


def ply_header(form: str, count: int, kind: str = "double", extra: str = "") -> str:
    xyz = "".join(f"property {kind} {axis}\n" for axis in "xyz")
    return f"ply\nformat {form}\ncomment test\nelement vertex {count}\n{xyz}{extra}end_header\n"


def test_point_cloud_files_are_voxelised_like_the_dataset_and_predicted_like_the_model_on_their_grids(
    workdir, tiny_model
):
    cloud = sample_cloud()
    expected = voxelise(cloud)
    np.save(workdir.path / "cloud.npy", cloud)
    np.savetxt(workdir.path / "cloud.txt", cloud, fmt="%.17g", header="x y z")
    np.savetxt(workdir.path / "cloud.csv", cloud, fmt="%.17g", delimiter=",")
    # ASCII with a colour property and an empty face element; binary in doubles
    extra = "property uchar red\nelement face 0\nproperty list uchar int vertex_indices\n"
    body = "".join(f"{x:.17g} {y:.17g} {z:.17g} 255\n" for x, y, z in cloud)
    written(workdir.path / "cloud.ply", ply_header("ascii 1.0", len(cloud), extra=extra) + body)
    binary = ply_header("binary_little_endian 1.0", len(cloud)).encode() + cloud.astype("<f8").tobytes()
    written(workdir.path / "binary.ply", binary)
    for name in ["cloud.npy", "cloud.txt", "cloud.csv", "cloud.ply", "binary.ply"]:
        samples = read_input(name)
        np.testing.assert_array_equal(np.concatenate(list(vector_blocks(samples, 8))), expected[None], err_msg=name)
        assert list(samples.index) == [0] and samples.labels is None
    # float32 vertices are voxelised as float32 values, not re-normalised: moving the cloud changes nothing
    floats = ply_header("binary_little_endian 1.0", len(cloud), "float").encode() + cloud.astype("<f4").tobytes()
    written(workdir.path / "float.ply", floats)
    np.testing.assert_array_equal(
        next(vector_blocks(read_input("float.ply"), 8))[0], voxelise(cloud.astype(np.float32))
    )
    # a rotated cloud gives a different grid: the CLI does not undo rotations
    assert not np.array_equal(voxelise(cloud @ random_rotations(np.random.default_rng(1), 1)[0]), expected)
    # a point cloud, and a row of a grid batch, predict like the model on their grids
    path, model = tiny_model
    cloud = sample_cloud(seed=2)
    np.savetxt(workdir.path / "cloud.txt", cloud)
    assert_rows_match(predicted(path, "cloud.txt"), [0], expected_probabilities(model, voxelise(cloud)[None]))
    flat = tiny_split(5, seed=4).x
    np.save(workdir.path / "batch.npy", flat.reshape(5, 16, 16, 16))
    assert_rows_match(predicted(path, "batch.npy", "--row", 4), [4], expected_probabilities(model, flat[4:]))


@pytest.mark.parametrize("shape", [(16, 16, 16), (4096,), (3, 16, 16, 16), (3, 4096)])
def test_voxel_grid_npy_in_every_shape_predicts_like_the_flat_vectors(workdir, tiny_model, shape):
    path, model = tiny_model
    flat = tiny_split(3, seed=9).x[: int(np.prod(shape)) // 4096]
    np.save(workdir.path / "grid.npy", flat.reshape(shape).astype(np.float32))
    np.testing.assert_array_equal(read_input("grid.npy").vectors, flat.astype(np.float32))
    expected = expected_probabilities(model, flat.astype(np.float32))
    assert_rows_match(predicted(path, "grid.npy"), range(len(flat)), expected)


def nan_grid() -> np.ndarray:
    grid = tiny_split(1).x.reshape(16, 16, 16)
    grid[1, 2, 3] = np.nan
    return grid


def two_rows(path) -> None:
    write_vectors(path, {"train": tiny_split(2), "test": tiny_split(2)})


def inf_row(path) -> None:
    x = tiny_split(2).x
    x[1, 5] = np.inf
    write_vectors(path, {"train": tiny_split(2), "test": Split(x, np.array([0, 1]))})


def damaged_model(path) -> None:
    two_rows(path)
    written(path.parent / "damaged.keras", b"PK not a model")


PLY = "ply\nformat ascii 1.0\nelement vertex {}\nproperty float x\n{}end_header\n{}"
BAD = {  # predict's arguments, what to put at the first (see `written`), and the words of the error line
    "wrong_shape.npy": (np.zeros((5, 7)), "wrong_shape.npy: shape (5, 7), expected a point cloud (N, 3)"),
    "nan.npy": (nan_grid(), "nan.npy: holds NaN or Inf values"),
    "too_big.npy": (
        tiny_split(1).x * 255,
        "too_big.npy: values must lie in [0, 1], found 0..255; divide each grid by its maximum",
    ),
    "empty_grid.npy": (np.zeros(4096), "empty_grid.npy: row 0 is all zeros"),
    "words.txt": ("1 2 3\n4 five 6\n", "words.txt is not a table of numbers"),
    "two_columns.txt": ("1 2\n3 4\n", "two_columns.txt: point cloud has shape (2, 2), expected (N, 3)"),
    "nan_cloud.txt": ("1 2 3\nnan 0 0\n", "nan_cloud.txt: the point cloud holds NaN or Inf coordinates"),
    "hd.ply": (PLY.format(1, "property banana y\n", "0 0\n"), "hd.ply: bad PLY header line 5 'property banana y'"),
    "no_z.ply": (
        PLY.format(1, "property float y\n", "0 0\n"),
        "no_z.ply: the PLY vertices have properties ['x', 'y'], need x, y and z",
    ),
    "short.ply": (
        PLY.format(3, "property float y\nproperty float z\n", "0 0 0\n"),
        "short.ply: expected 3 vertex lines of 3 values after the header",
    ),
    "cloud.obj": ("v 0 0 0\n", "cloud.obj: unknown file type .obj"),
    "missing.npy": (None, "missing.npy not found; check the path"),
    "broken.h5": (b"not hdf5", "broken.h5 is not a readable HDF5 file"),
    "inf.h5": (inf_row, "inf.h5 X_test: holds NaN or Inf values"),
    "v.h5 --row 2": (two_rows, "v.h5: --row 2 is out of range, the input has 2 row(s): use 0..1"),
    "v.h5 --model nowhere.keras": (two_rows, "nowhere.keras not found; run the train stage first (dvc repro train)"),
    "v.h5 --model damaged.keras": (damaged_model, "damaged.keras is not a loadable Keras model"),
}


@pytest.mark.parametrize("args", BAD)
def test_malformed_inputs_end_in_one_error_line_and_no_csv(workdir, tiny_model, capsys, args):
    content, message = BAD[args]
    args = args.split()
    written(workdir.path / args[0], content)
    model = [] if "--model" in args else ["--model", tiny_model[0]]
    assert run_cli(*args, *model, "--csv", "out.csv") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert not (workdir.path / "out.csv").exists()


def test_params_yaml_that_disagrees_with_the_model_is_named_and_the_model_followed(workdir, tiny_model, capsys):
    """Another align and colormap in params.yaml than the model was built with: the same predictions as before, and
    the header line says what differs."""
    path, model = tiny_model
    current = workdir.params["preprocess"]["align"]
    other = "plane" if current == "none" else "none"
    workdir.set("preprocess.align", other)
    workdir.set("preprocess.colormap", "viridis")
    test = tiny_split(4, seed=3)
    write_vectors(workdir.path / "v.h5", {"train": tiny_split(2), "test": test})
    assert_rows_match(predicted(path, "v.h5"), range(4), expected_probabilities(model, test.x), test.y)
    header = capsys.readouterr().out.splitlines()[0]
    assert f"(colormap {PREPROCESS['colormap']}, align {current}, 1 view(s); params.yaml has colormap viridis" in header
    assert f"align {other}, but the model's own are used)" in header


def test_python_m_mnist3d_predict_refuses_a_bad_file_in_one_line(project):
    """The real command line, in its own process: a bad file ends in one line and no traceback, before any model
    loads. (A good run of it, from a project root, is test_pipeline's predict-against-evaluate test.)"""
    np.save(project.path / "bad.npy", np.ones((2, 2, 2)))
    bad = predict_cli(project.path, "bad.npy")
    assert error_line(bad).startswith("error: bad.npy: shape (2, 2, 2), expected a point cloud") and bad.stdout == ""


@pytest.mark.parametrize("target", ["models/model.keras", "v.h5", "params.yaml", "pipe.csv", "out", "v.h5/p.csv"])
def test_csv_never_writes_over_the_model_the_input_params_or_a_non_regular_file(workdir, tiny_model, capsys, target):
    """--csv naming the model, the input, params.yaml, a FIFO, a folder or a path through a file: one error line,
    before any model loads, and everything is left as it was."""
    model_copy = workdir.path / "models" / "model.keras"
    model_copy.parent.mkdir()
    model_copy.write_bytes(tiny_model[0].read_bytes())
    two_rows(workdir.path / "v.h5")
    os.mkfifo(workdir.path / "pipe.csv")
    (workdir.path / "out").mkdir()
    before = {p: (workdir.path / p).read_bytes() for p in ("models/model.keras", "v.h5", "params.yaml")}
    assert run_cli("v.h5", "--csv", target) == 1
    err = capsys.readouterr().err
    prefix = (
        "error: v.h5/p.csv cannot be written: v.h5 is not a folder" if "/p.csv" in target else f"error: --csv {target} "
    )
    assert err.startswith(prefix) and len(err.splitlines()) == 1, err
    assert {p: (workdir.path / p).read_bytes() for p in before} == before
    assert stat.S_ISFIFO((workdir.path / "pipe.csv").stat().st_mode) and (workdir.path / "out").is_dir()
