"""python -m mnist3d predict: every input goes through the training preprocessing and a tiny saved model."""

import csv
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from mnist3d.__main__ import main
from mnist3d.inputs import network_inputs
from mnist3d.params import load_section
from mnist3d.predict import CSV_COLUMNS, read_samples
from mnist3d.vectors import Split, write_vectors
from mnist3d.voxels import digit_cloud, random_rotations, rotate_with_noise, voxelise
from tests.conftest import ROOT, TINY_ARCHITECTURE, clean_env, tiny_split


def preprocess_params(path=ROOT / "params.yaml"):
    return load_section("preprocess", path)


def expected_probabilities(model, vectors, params):
    """What the model says on the preprocess stage's own inputs for these vectors."""
    x = network_inputs(np.asarray(vectors, dtype=np.float64), params["colormap"], params["align"])
    return model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny untrained model for the current params' channels, its output layer scaled so rows differ clearly."""
    import keras

    from mnist3d.model import build_model

    keras.utils.set_random_seed(0)
    params = preprocess_params()
    channels = network_inputs(tiny_split(1).x, params["colormap"], params["align"]).shape[-1]
    model = build_model(TINY_ARCHITECTURE, input_shape=(16, 16, 16, channels))
    output = model.get_layer("digit")
    kernel, bias = output.get_weights()
    output.set_weights([kernel * 40, bias])
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path, keras.saving.load_model(path, safe_mode=True)


@pytest.fixture
def workdir(project, monkeypatch):
    """The scratch project (with a copy of params.yaml) as the current directory, as a user runs the CLI."""
    monkeypatch.chdir(project.path)
    return project


def run_cli(*args):
    """main() in this process; returns its exit code (output is left for capsys)."""
    try:
        main(["predict", *map(str, args)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


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


def test_vectors_file_all_rows_match_model_predict_on_network_inputs(workdir, tiny_model, capsys):
    path, model = tiny_model
    test = tiny_split(12, seed=3)
    write_vectors(workdir.path / "v.h5", {"train": tiny_split(20), "test": test})
    assert run_cli("v.h5", "--model", path, "--csv", "out/predictions.csv") == 0
    expected = expected_probabilities(model, test.x, preprocess_params("params.yaml"))
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


def test_row_and_split_pick_one_row_of_the_vectors_file(workdir, tiny_model, capsys):
    path, model = tiny_model
    train = tiny_split(20, seed=5)
    write_vectors(workdir.path / "v.h5", {"train": train, "test": tiny_split(4, seed=1)})
    assert run_cli("v.h5", "--split", "train", "--row", 7, "--model", path, "--csv", "one.csv") == 0
    expected = expected_probabilities(model, train.x, preprocess_params("params.yaml"))
    rows = read_csv(workdir.path / "one.csv")
    assert_rows_match(rows, [7], expected[7:8], train.y[7:8])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("predict: v.h5 X_train, 1 row(s)")
    assert out[1].startswith(f"row 7: predicted {expected[7].argmax()} ")


def test_point_cloud_files_are_voxelised_exactly_like_the_dataset(workdir, tiny_model):
    cloud = sample_cloud()
    expected = voxelise(cloud)
    np.save(workdir.path / "cloud.npy", cloud)
    np.savetxt(workdir.path / "cloud.txt", cloud, fmt="%.17g", header="x y z")
    np.savetxt(workdir.path / "cloud.csv", cloud, fmt="%.17g", delimiter=",")
    header = (
        "ply\nformat {}\ncomment test\nelement vertex {}\nproperty double x\nproperty double y\nproperty double z\n"
    )
    ascii_header = header.format("ascii 1.0", len(cloud)).replace(
        "property double z\n", "property double z\nproperty uchar red\n"
    )
    body = "".join(f"{x:.17g} {y:.17g} {z:.17g} 255\n" for x, y, z in cloud)
    (workdir.path / "cloud.ply").write_text(
        ascii_header + "element face 0\nproperty list uchar int vertex_indices\nend_header\n" + body
    )
    binary = (header.format("binary_little_endian 1.0", len(cloud)) + "end_header\n").encode() + cloud.astype(
        "<f8"
    ).tobytes()
    (workdir.path / "binary.ply").write_bytes(binary)
    for name in ["cloud.npy", "cloud.txt", "cloud.csv", "cloud.ply", "binary.ply"]:
        samples = read_samples(name)
        np.testing.assert_array_equal(samples.vectors, expected[None], err_msg=name)
        assert list(samples.index) == [0] and samples.labels is None
    # float32 vertices are voxelised as float32 values, not re-normalised: moving the cloud changes nothing
    floats = (
        header.replace("double", "float").format("binary_little_endian 1.0", len(cloud)) + "end_header\n"
    ).encode()
    (workdir.path / "float.ply").write_bytes(floats + cloud.astype("<f4").tobytes())
    np.testing.assert_array_equal(read_samples("float.ply").vectors[0], voxelise(cloud.astype(np.float32)))
    # a rotated cloud gives a different grid: the CLI does not undo rotations
    assert not np.array_equal(voxelise(cloud @ random_rotations(np.random.default_rng(1), 1)[0]), expected)


def test_point_cloud_prediction_matches_the_model_on_its_voxel_grid(workdir, tiny_model):
    path, model = tiny_model
    cloud = sample_cloud(seed=2)
    np.savetxt(workdir.path / "cloud.txt", cloud)
    assert run_cli("cloud.txt", "--model", path, "--csv", "cloud.csv") == 0
    expected = expected_probabilities(model, voxelise(cloud)[None], preprocess_params("params.yaml"))
    assert_rows_match(read_csv(workdir.path / "cloud.csv"), [0], expected)


@pytest.mark.parametrize("shape", [(16, 16, 16), (4096,), (3, 16, 16, 16), (3, 4096)])
def test_voxel_grid_npy_in_every_shape_predicts_like_the_flat_vectors(workdir, tiny_model, shape):
    path, model = tiny_model
    flat = tiny_split(3, seed=9).x[: int(np.prod(shape)) // 4096]
    np.save(workdir.path / "grid.npy", flat.reshape(shape).astype(np.float32))
    np.testing.assert_array_equal(read_samples("grid.npy").vectors, flat.astype(np.float32))
    assert run_cli("grid.npy", "--model", path, "--csv", "grid.csv") == 0
    expected = expected_probabilities(model, flat.astype(np.float32), preprocess_params("params.yaml"))
    assert_rows_match(read_csv(workdir.path / "grid.csv"), range(len(flat)), expected)


def test_row_of_a_grid_batch(workdir, tiny_model):
    path, model = tiny_model
    flat = tiny_split(5, seed=4).x
    np.save(workdir.path / "batch.npy", flat.reshape(5, 16, 16, 16))
    assert run_cli("batch.npy", "--row", 4, "--model", path, "--csv", "b.csv") == 0
    expected = expected_probabilities(model, flat[4:], preprocess_params("params.yaml"))
    assert_rows_match(read_csv(workdir.path / "b.csv"), [4], expected)


def write_bad_inputs(folder):
    np.save(folder / "wrong_shape.npy", np.zeros((5, 7)))
    nan = tiny_split(1).x.reshape(16, 16, 16)
    nan[1, 2, 3] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "too_big.npy", tiny_split(1).x * 255)
    np.save(folder / "empty_grid.npy", np.zeros(4096))
    (folder / "words.txt").write_text("1 2 3\n4 five 6\n")
    (folder / "two_columns.txt").write_text("1 2\n3 4\n")
    (folder / "nan_cloud.txt").write_text("1 2 3\nnan 0 0\n")
    (folder / "header.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty banana y\nend_header\n0 0\n"
    )
    (folder / "no_z.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n"
    )
    (folder / "short.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n"
    )
    (folder / "cloud.obj").write_text("v 0 0 0\n")
    (folder / "broken.h5").write_bytes(b"not hdf5")
    write_vectors(folder / "v.h5", {"train": tiny_split(2), "test": tiny_split(2)})
    x = tiny_split(2).x
    x[1, 5] = np.inf
    write_vectors(folder / "inf.h5", {"train": tiny_split(2), "test": Split(x, np.array([0, 1]))})
    (folder / "damaged.keras").write_bytes(b"PK not a model")


BAD = [
    (["wrong_shape.npy"], "wrong_shape.npy: shape (5, 7), expected a point cloud (N, 3)"),
    (["nan.npy"], "nan.npy: holds NaN or Inf values"),
    (["too_big.npy"], "too_big.npy: values must lie in [0, 1], found 0..255; divide each grid by its maximum"),
    (["empty_grid.npy"], "empty_grid.npy: row 0 is all zeros"),
    (["words.txt"], "words.txt is not a table of numbers"),
    (["two_columns.txt"], "two_columns.txt: point cloud has shape (2, 2), expected (N, 3)"),
    (["nan_cloud.txt"], "nan_cloud.txt: the point cloud holds NaN or Inf coordinates"),
    (["header.ply"], "header.ply: bad PLY header line 5 'property banana y'"),
    (["no_z.ply"], "no_z.ply: the PLY vertices have properties ['x', 'y'], need x, y and z"),
    (["short.ply"], "short.ply: expected 3 vertex lines of 3 values after the header"),
    (["cloud.obj"], "cloud.obj: unknown file type .obj"),
    (["missing.npy"], "missing.npy not found; check the path"),
    (["broken.h5"], "broken.h5 is not a readable HDF5 file"),
    (["inf.h5"], "inf.h5 X_test: holds NaN or Inf values"),
    (["v.h5", "--row", "2"], "v.h5: --row 2 is out of range, the input has 2 row(s): use 0..1"),
    (
        ["v.h5", "--model", "nowhere.keras"],
        "nowhere.keras not found; run the train stage first (dvc repro train)",
    ),
    (["v.h5", "--model", "damaged.keras"], "damaged.keras is not a loadable Keras model"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_malformed_inputs_end_in_one_error_line_and_no_csv(workdir, tiny_model, capsys, args, message):
    write_bad_inputs(workdir.path)
    model = [] if "--model" in args else ["--model", tiny_model[0]]
    assert run_cli(*args, *model, "--csv", "out.csv") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert not (workdir.path / "out.csv").exists()


def test_params_that_change_the_channels_are_caught_against_the_model(workdir, tiny_model, capsys):
    current = workdir.params["preprocess"]["align"]
    workdir.set("preprocess.align", "plane" if current == "none" else "none")
    write_vectors(workdir.path / "v.h5", {"train": tiny_split(2), "test": tiny_split(2)})
    assert run_cli("v.h5", "--model", tiny_model[0]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the model expects inputs (16, 16, 16, ") and "set preprocess.align" in err


def test_python_m_mnist3d_predict_runs_from_the_project_root(project, tiny_model):
    """The real command line, in its own process: one good run, and one bad file with no traceback."""
    cloud = sample_cloud(seed=4)
    np.save(project.path / "cloud.npy", cloud)
    np.save(project.path / "bad.npy", np.ones((2, 2, 2)))
    env = clean_env({"PYTHONPATH": str(ROOT)})

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mnist3d", "predict", *args],
            cwd=project.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    good = cli("cloud.npy", "--model", str(tiny_model[0]))
    assert good.returncode == 0, good.stderr
    expected = expected_probabilities(tiny_model[1], voxelise(cloud)[None], preprocess_params())
    assert good.stdout.splitlines()[1].startswith(f"row 0: predicted {expected.argmax()}  top-3: ")
    bad = cli("bad.npy")
    assert bad.returncode == 1 and bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.npy: shape (2, 2, 2), expected a point cloud"), (
        bad.stderr
    )


@pytest.mark.parametrize("target", ["model", "input", "params", "fifo", "folder"])
def test_csv_never_writes_over_the_model_the_input_params_or_a_non_regular_file(workdir, tiny_model, capsys, target):
    """--csv naming the model, the input, params.yaml, a FIFO or a folder: one error line, and it is left as it was."""
    model_copy = workdir.path / "models" / "model.keras"
    model_copy.parent.mkdir()
    model_copy.write_bytes(tiny_model[0].read_bytes())
    write_vectors(workdir.path / "v.h5", {"train": tiny_split(2), "test": tiny_split(2)})
    os.mkfifo(workdir.path / "pipe.csv")
    (workdir.path / "out").mkdir()
    paths = {
        "model": "models/model.keras",
        "input": "v.h5",
        "params": "params.yaml",
        "fifo": "pipe.csv",
        "folder": "out",
    }
    before = {p: (workdir.path / p).read_bytes() for p in ("models/model.keras", "v.h5", "params.yaml")}
    assert run_cli("v.h5", "--csv", paths[target]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --csv {paths[target]} ") and len(err.splitlines()) == 1, err
    assert {p: (workdir.path / p).read_bytes() for p in before} == before
    assert stat.S_ISFIFO((workdir.path / "pipe.csv").stat().st_mode) and (workdir.path / "out").is_dir()


def test_an_existing_csv_is_replaced_atomically(workdir, tiny_model):
    write_vectors(workdir.path / "v.h5", {"train": tiny_split(2), "test": tiny_split(3)})
    (workdir.path / "old.csv").write_text("stale\n")
    assert run_cli("v.h5", "--model", tiny_model[0], "--csv", "old.csv") == 0
    assert [int(r["index"]) for r in read_csv(workdir.path / "old.csv")] == [0, 1, 2]
    assert sorted(p.name for p in workdir.path.iterdir() if p.name.startswith(".")) == []  # no temp left behind
