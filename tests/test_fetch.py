"""The fetch stage, run as a user runs it: Kaggle through a fake server on 127.0.0.1, and local copies."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from mnist3d.vectors import VECTORS_FILE, Split, write_vectors
from tests.conftest import SECRET, error_line, tiny_split, tiny_zip_bytes, write_tiny_vectors
from tests.fake_kaggle import DOWNLOAD_PATH, FakeKaggle, write_kaggle_json

CLOUDS_FILE = "train_point_clouds.h5"


# --- helpers ---------------------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scratch(tmp_path: Path, name: str) -> Path:
    """A fresh folder under tmp_path, outside the project."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_nothing_written(project) -> None:
    """No data/raw, and no temporary folders left behind in data/."""
    data = project.path / "data"
    assert not (data / "raw").exists()
    assert not data.exists() or sorted(p.name for p in data.iterdir()) == []


def manifest(project) -> dict:
    return json.loads((project.path / "data" / "manifest.json").read_text())


def kaggle_env(tmp_path: Path, fake: FakeKaggle, credentials: bool = True, config_dir: bool = True) -> dict[str, str]:
    """Env routing the real kaggle client to `fake`, with a scratch HOME and kaggle.json unless told otherwise."""
    home = scratch(tmp_path, "home")
    config = tmp_path / "kaggle-config"
    if credentials:
        write_kaggle_json(config)
    elif config_dir:
        config.mkdir(exist_ok=True)
    env = fake.env(config if config_dir else None)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **env}


def fetch_kaggle(project, tmp_path: Path, fake: FakeKaggle, **env_options):
    return project.run("fetch", env=kaggle_env(tmp_path, fake, **env_options), timeout=120)


def zip_of(tmp_path: Path, entries: dict[str, bytes]) -> bytes:
    """A zip holding the tiny vectors file plus `entries`."""
    return tiny_zip_bytes(scratch(tmp_path, "zip-build"), entries)


@pytest.fixture
def served(tmp_path: Path) -> bytes:
    """The tiny 3D MNIST zip the fake serves by default."""
    return zip_of(tmp_path, {})


# --- Kaggle ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, None], ids=["pinned-version", "latest"])
def test_kaggle_download_writes_raw_files_and_manifest(project, tmp_path, served, version):
    """The real kaggle client downloads the zip; data/raw holds the vectors and a manifest that pins the download."""
    project.set("data.version", version)
    with FakeKaggle(served) as fake:
        result = fetch_kaggle(project, tmp_path, fake)

    assert result.returncode == 0, result.stderr
    raw = project.path / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [VECTORS_FILE]
    # no .download / .raw temp folders
    assert sorted(p.name for p in (project.path / "data").iterdir()) == ["manifest.json", "raw"]

    served_vectors = zipfile.ZipFile(io.BytesIO(served)).read(VECTORS_FILE)
    extracted = (raw / VECTORS_FILE).read_bytes()
    assert extracted == served_vectors
    info = manifest(project)
    assert info["source"] == "kaggle"
    assert info["dataset"] == project.params["data"]["dataset"] == "daavoo/3d-mnist"
    assert info["version"] == version
    assert info["zip_sha256"] == sha256_bytes(served)
    assert info["files"][VECTORS_FILE]["sha256"] == sha256_bytes(extracted)
    assert info["rows"] == {"train": 20, "test": 10}

    posts = [r for r in fake.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == [DOWNLOAD_PATH]
    assert posts[0]["json"]["ownerSlug"] == "daavoo" and posts[0]["json"]["datasetSlug"] == "3d-mnist"
    assert posts[0]["json"].get("datasetVersionNumber") == version
    assert "authorization" in {name.lower() for name in posts[0]["headers"]}
    assert [r["path"] for r in fake.requests if r["method"] == "GET"] == [fake.blob_path]


@pytest.mark.parametrize("status", [302, 401], ids=["success", "refused"])
def test_kaggle_key_never_leaks(project, tmp_path, served, status):
    """The planted key shows up neither in the output nor in any file the stage writes."""
    with FakeKaggle(served) as fake:
        fake.status = status
        result = fetch_kaggle(project, tmp_path, fake)
    assert (result.returncode == 0) == (status == 302), result.stderr
    assert SECRET not in result.stdout + result.stderr
    written = [p for p in project.path.rglob("*") if p.is_file()]
    assert written  # at least params.yaml, so the scan below really looks at something
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("config_dir", [True, False], ids=["empty-KAGGLE_CONFIG_DIR", "nothing-in-HOME"])
def test_kaggle_without_credentials_says_how_to_fix_and_sends_nothing(project, tmp_path, served, config_dir):
    """No kaggle.json and no KAGGLE_* credentials: the stage stops before any request and names both fixes."""
    with FakeKaggle(served) as fake:
        result = fetch_kaggle(project, tmp_path, fake, credentials=False, config_dir=config_dir)
    line = error_line(result, alone=False)
    assert "kaggle.json" in line and "credentials" in line
    assert "data.source=synthetic" in line
    assert fake.requests == []
    assert_nothing_written(project)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("{not json", "is not valid JSON", id="invalid-json"),
        pytest.param(json.dumps({"username": "tester"}), "needs both 'username' and 'key'", id="no-key"),
    ],
)
def test_kaggle_broken_kaggle_json_is_named(project, tmp_path, served, content, expected):
    """A kaggle.json that is there but unusable is named in the message, and nothing is requested."""
    with FakeKaggle(served) as fake:
        env = kaggle_env(tmp_path, fake, credentials=False)
        (tmp_path / "kaggle-config" / "kaggle.json").write_text(content)
        result = project.run("fetch", env=env, timeout=120)
    line = error_line(result, alone=False)
    assert expected in line and "kaggle.json" in line
    assert fake.requests == []
    assert_nothing_written(project)


def test_kaggle_finds_kaggle_json_where_the_client_does(project, tmp_path, served):
    """Credentials in ~/.config/kaggle/kaggle.json, where the kaggle client itself finds them on Linux."""
    with FakeKaggle(served) as fake:
        env = kaggle_env(tmp_path, fake, credentials=False, config_dir=False)
        write_kaggle_json(Path(env["XDG_CONFIG_HOME"]) / "kaggle")
        result = project.run("fetch", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert manifest(project)["zip_sha256"] == sha256_bytes(served)


@pytest.mark.parametrize(
    ("fault", "code", "expected"),
    [
        pytest.param("status", 401, ["HTTP 401", "kaggle.json"], id="401"),
        pytest.param("status", 403, ["HTTP 403", "terms"], id="403"),
        pytest.param("status", 404, ["HTTP 404", "data.dataset", "data.version"], id="404"),
        pytest.param("status", 500, ["HTTP 500", "data.source=synthetic"], id="500"),
        pytest.param("blob_status", 500, ["HTTP 500"], id="blob-500"),
    ],
)
def test_kaggle_http_errors_give_one_line_advice(project, tmp_path, served, fault, code, expected):
    """An HTTP error from Kaggle ends in one line that names the status and what to check."""
    with FakeKaggle(served) as fake:
        setattr(fake, fault, code)
        result = fetch_kaggle(project, tmp_path, fake)
    line = error_line(result, alone=False)
    for fragment in expected:
        assert fragment in line
    assert "daavoo/3d-mnist/1" in line
    assert_nothing_written(project)


def test_kaggle_connection_refused_says_so(project, tmp_path, served):
    """Nothing listens where the client is sent: one line with advice, nothing written."""
    fake = FakeKaggle(served)
    with socket.socket() as bound:  # a port the OS gave, held but never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        fake.port = bound.getsockname()[1]
        result = project.run("fetch", env=kaggle_env(tmp_path, fake), timeout=120)
    line = error_line(result, alone=False)
    assert "could not connect" in line and "data.source=synthetic" in line, line
    assert_nothing_written(project)


def test_kaggle_stalled_server_times_out(project, tmp_path, served):
    """A server that never answers fails after data.timeout seconds, with advice, instead of hanging."""
    project.set("data.timeout", 1)
    with FakeKaggle(served) as fake:
        fake.hang = True
        result = fetch_kaggle(project, tmp_path, fake)
    line = error_line(result, alone=False)
    assert "timed out" in line and "data.timeout" in line
    assert_nothing_written(project)


def test_kaggle_download_cut_short_fails_cleanly(project, tmp_path, served):
    """A body cut off mid-transfer (after the client's own retries) ends in one error line, not a traceback."""
    # The kaggle client sleeps 2+4+8+16+32 s between its retries; make time.sleep instant in the stage's process.
    hooks = scratch(tmp_path, "hooks")
    (hooks / "sitecustomize.py").write_text("import time\ntime.sleep = lambda seconds: None\n")
    with FakeKaggle(served) as fake:
        fake.truncate_blob = True
        env = kaggle_env(tmp_path, fake)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
        result = project.run("fetch", env=env, timeout=120)
    assert len([r for r in fake.requests if r["method"] == "GET"]) > 1  # the client did retry, without waiting
    assert "was cut short" in error_line(result, alone=False)
    assert_nothing_written(project)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("no-vectors", f"holds no {VECTORS_FILE}", id="zip-without-vectors"),
        pytest.param("html", "is not a valid zip file", id="html-instead-of-zip"),
        pytest.param("half-zip", "is not a valid zip file", id="zip-cut-in-half"),
    ],
)
def test_kaggle_wrong_archive_is_refused(project, tmp_path, served, body, expected):
    """What Kaggle serves must be a zip holding the vectors file."""
    bodies = {
        "no-vectors": lambda: tiny_zip_bytes(scratch(tmp_path, "other"), {"readme.txt": b"hi"}, with_vectors=False),
        "html": lambda: b"<html><body>Please sign in</body></html>",
        "half-zip": lambda: served[: len(served) // 2],
    }
    with FakeKaggle(bodies[body]()) as fake:
        result = fetch_kaggle(project, tmp_path, fake)
    assert expected in error_line(result, alone=False)
    assert_nothing_written(project)


@pytest.mark.parametrize(
    ("source", "entry"),
    [
        pytest.param("kaggle", "../../evil.txt", id="kaggle-dotdot"),
        pytest.param("local", "../../evil.txt", id="local-dotdot"),
        pytest.param("local", "/evil.txt", id="local-absolute"),
        pytest.param("local", "..\\..\\evil.txt", id="local-backslashes"),
    ],
)
def test_zip_with_entry_outside_the_folder_is_refused(project, tmp_path, source, entry):
    """A zip entry that points outside the target folder is refused, and nothing of it lands anywhere."""
    archive = zip_of(tmp_path, {entry: b"owned"})
    if source == "kaggle":
        with FakeKaggle(archive) as fake:
            result = fetch_kaggle(project, tmp_path, fake)
    else:
        path = tmp_path / "evil.zip"
        path.write_bytes(archive)
        project.set("data.source", "local")
        project.set("data.path", str(path))
        result = project.run("fetch", timeout=120)
    line = error_line(result, alone=False)
    assert "unsafe entry" in line and repr(entry) in line
    assert list(tmp_path.rglob("evil.txt")) == []
    assert not Path("/evil.txt").exists()
    assert_nothing_written(project)


# --- local source ----------------------------------------------------------------------------------------------------


def write_tiny_clouds(path: Path, labels=None) -> Path:
    """A point-cloud file of one tiny cloud per label: by default one per (original, rotated) pair of tiny_split(20)."""
    labels = tiny_split(20).y[0::2] if labels is None else labels
    with h5py.File(path, "w") as h5:
        for index, label in enumerate(labels):
            group = h5.create_group(str(index))
            group.create_dataset("points", data=np.zeros((5, 3)))
            group.attrs["label"] = label
    return path


def local_zip(folder: Path) -> Path:
    path = folder / "3d-mnist.zip"
    path.write_bytes(tiny_zip_bytes(scratch(folder, "build")))
    return path


def local_folder(folder: Path) -> Path:
    files = scratch(folder, "3d-mnist")
    write_tiny_vectors(files / VECTORS_FILE)
    write_tiny_clouds(files / CLOUDS_FILE)
    (files / "notes.txt").write_text("not part of the dataset")
    return files


def local_h5(folder: Path) -> Path:
    return write_tiny_vectors(folder / "vectors-copy.h5")


def run_local(project, path: Path | str):
    project.set("data.source", "local")
    project.set("data.path", str(path))
    return project.run("fetch", timeout=120)


@pytest.mark.parametrize(
    ("make", "files"),
    [
        pytest.param(local_zip, [VECTORS_FILE], id="zip"),
        pytest.param(local_folder, [CLOUDS_FILE, VECTORS_FILE], id="folder"),
        pytest.param(local_h5, [VECTORS_FILE], id="bare-h5"),
    ],
)
def test_local_copy_is_fetched(project, tmp_path, make, files):
    """data.path may be the zip, a folder of its files, or the vectors .h5 alone; only dataset files are copied."""
    path = make(scratch(tmp_path, "downloads"))
    result = run_local(project, path)
    assert result.returncode == 0, result.stderr
    raw = project.path / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(files)
    info = manifest(project)
    assert info["source"] == "local" and info["path"] == str(path)
    assert info["rows"] == {"train": 20, "test": 10}
    assert sorted(info["files"]) == sorted(files)
    for name in files:
        assert info["files"][name]["sha256"] == sha256_bytes((raw / name).read_bytes())
    assert sorted(p.name for p in (project.path / "data").iterdir()) == ["manifest.json", "raw"]


def bad_vectors(change: Callable[[Split, Split], None]) -> Callable[[Path], Path]:
    """A maker for a vectors file whose tiny splits are spoiled by `change(train, test)`."""

    def make(folder: Path) -> Path:
        train, test = tiny_split(20), tiny_split(10, seed=1)
        change(train, test)
        path = folder / VECTORS_FILE
        write_vectors(path, {"train": train, "test": test})
        return path

    return make


def narrow_columns(train: Split, test: Split) -> None:
    train.x = train.x[:, :4000]


def nan_pixel(train: Split, test: Split) -> None:
    train.x[3, 7] = np.nan


def label_ten(train: Split, test: Split) -> None:
    test.y[0] = 10


def inf_pixel(train: Split, test: Split) -> None:
    test.x[1, 9] = np.inf


def above_one(train: Split, test: Split) -> None:
    train.x[2, 5] = 1.5


def label_minus_one(train: Split, test: Split) -> None:
    train.y[4] = -1


def fewer_labels(train: Split, test: Split) -> None:
    train.y = train.y[:-3]


def pair_disagrees(train: Split, test: Split) -> None:
    train.y[5] = (train.y[4] + 1) % 10


def clouds_beside(labels) -> Callable[[Path], Path]:
    """A maker for a folder of the tiny vectors and a training cloud file with these labels."""

    def make(folder: Path) -> Path:
        write_tiny_vectors(folder / VECTORS_FILE)
        write_tiny_clouds(folder / CLOUDS_FILE, labels)
        return folder

    return make


def empty_test(train: Split, test: Split) -> None:
    test.x, test.y = test.x[:0], test.y[:0]


def truncated_h5(folder: Path) -> Path:
    path = bad_vectors(lambda train, test: None)(folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def only_train(folder: Path) -> Path:
    path = folder / VECTORS_FILE
    write_vectors(path, {"train": tiny_split(20)})
    return path


def not_hdf5(folder: Path) -> Path:
    path = folder / VECTORS_FILE
    path.write_text("this is not HDF5")
    return path


def text_file(folder: Path) -> Path:
    path = folder / "readme.txt"
    path.write_text("the dataset is elsewhere")
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda folder: folder / "nowhere.zip", ["does not exist", "nowhere.zip"], id="missing-path"),
        pytest.param(lambda folder: folder, [f"holds no {VECTORS_FILE}"], id="folder-without-files"),
        pytest.param(text_file, ["neither a zip, a folder nor an .h5"], id="text-file"),
        pytest.param(bad_vectors(narrow_columns), ["train", "(20, 4000)", "4096"], id="4000-columns"),
        pytest.param(bad_vectors(nan_pixel), ["train", "NaN"], id="nan-in-x"),
        pytest.param(bad_vectors(label_ten), ["test", "labels must lie in 0..9", "..10"], id="label-10"),
        pytest.param(bad_vectors(label_minus_one), ["train", "labels must lie in 0..9", "-1.."], id="label-minus-1"),
        pytest.param(bad_vectors(inf_pixel), ["test", "NaN or Inf"], id="inf-in-x"),
        pytest.param(
            bad_vectors(above_one), ["train", "X must lie in [0, 1]", "1.5", "fetch the data again"], id="above-one"
        ),
        pytest.param(bad_vectors(fewer_labels), ["train", "20 rows but y has 17"], id="x-and-y-lengths-differ"),
        pytest.param(bad_vectors(empty_test), ["test", "the split is empty"], id="empty-split"),
        pytest.param(bad_vectors(pair_disagrees), ["train", "rows 4 and 5 have labels 2 and 3"], id="pair-disagrees"),
        pytest.param(clouds_beside(range(9)), ["9 clouds for 20 vectors"], id="clouds-too-few"),
        pytest.param(
            clouds_beside((tiny_split(20).y[0::2] + 3) % 10),
            ["cloud 0 is labelled 3 but vectors 0 and 1 are 0"],
            id="clouds-off-by-3",
        ),
        pytest.param(truncated_h5, ["not a readable HDF5 file"], id="h5-cut-in-half"),
        pytest.param(only_train, ["missing datasets", "X_test", "y_test"], id="no-test-split"),
        pytest.param(not_hdf5, ["not a readable HDF5 file"], id="not-hdf5"),
        pytest.param(lambda folder: "", ["data.path is empty"], id="empty-data-path"),
    ],
)
def test_bad_local_copy_is_refused(project, tmp_path, make, expected):
    """A bad data.path fails with one line that names the problem, and data/raw is never created."""
    result = run_local(project, make(scratch(tmp_path, "downloads")))
    line = error_line(result, alone=False)
    for fragment in expected:
        assert fragment in line
    assert_nothing_written(project)


def test_failed_fetch_keeps_the_previous_raw_data(project, tmp_path):
    """A fetch that fails leaves the data/raw of the last good fetch untouched."""
    downloads = scratch(tmp_path, "downloads")
    assert run_local(project, local_h5(downloads)).returncode == 0
    before = {p.name: p.read_bytes() for p in (project.path / "data" / "raw").iterdir()}
    line = error_line(run_local(project, bad_vectors(nan_pixel)(scratch(tmp_path, "bad"))))
    assert "NaN" in line
    after = {p.name: p.read_bytes() for p in (project.path / "data" / "raw").iterdir()}
    assert after == before
    assert sorted(p.name for p in (project.path / "data").iterdir()) == ["manifest.json", "raw"]


def test_a_typo_in_another_section_stops_the_fetch(project):
    """Every stage checks all of params.yaml: a typo in `evaluate` stops the first stage, not one 14 minutes on."""
    project.set("evaluate.tta_view", 4)
    project.set("data.source", "synthetic")
    line = error_line(project.run("fetch"))
    assert line.startswith("error: params.yaml: unknown key evaluate.tta_view; known keys are batch_size, tta_views")
    assert_nothing_written(project)
