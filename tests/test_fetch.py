"""The fetch stage, run as a user runs it: Kaggle through a fake server on 127.0.0.1, and local copies."""

import hashlib
import io
import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist3d.data.sources import fetch
from mnist3d.errors import PipelineError
from mnist3d.io.schema import VECTORS_FILE, write_vectors
from tests.conftest import assert_no_secret, error_line, tiny_split, tiny_zip_bytes, write_tiny_vectors, written
from tests.fake_kaggle import DOWNLOAD_PATH, FakeKaggle, kaggle_env, write_kaggle_json

CLOUDS_FILE = "train_point_clouds.h5"
SERVED = tiny_zip_bytes()  # the tiny 3D MNIST zip the fake serves unless a test serves another
EVIL = "../../evil.txt"  # a zip entry that points outside the target folder
PAIR_LABELS = tiny_split(20).y[0::2]  # a label per (original, rotated) pair of rows of the tiny vectors


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(project) -> dict:
    return json.loads((project.path / "data" / "manifest.json").read_text())


def assert_fetched(project, files: list[str], source: str) -> dict:
    """data/raw holds `files`, beside the manifest and no temporary folder; the manifest pins them. Returns it."""
    raw = project.path / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(files)
    assert sorted(p.name for p in (project.path / "data").iterdir()) == ["manifest.json", "raw"]
    info = manifest(project)
    assert info["source"] == source and info["rows"] == {"train": 20, "test": 10}
    assert sorted(info["files"]) == sorted(files)
    for name in files:
        assert info["files"][name]["sha256"] == sha256_bytes((raw / name).read_bytes())
    return info


def fetch_kaggle(project, tmp_path: Path, fake: FakeKaggle, **env_options):
    return project.run("fetch", env=kaggle_env(tmp_path, fake, **env_options), timeout=120)


@pytest.mark.parametrize(("version", "config_dir"), [(3, True), (None, False)], ids=["pinned", "latest-XDG"])
def test_kaggle_download_writes_raw_files_and_manifest_and_leaks_no_key(project, tmp_path, version, config_dir):
    """The real client downloads the zip (with credentials in KAGGLE_CONFIG_DIR, or where it finds them on Linux: in
    ~/.config/kaggle); data/raw holds the vectors and a manifest that pins the download."""
    project.set("data.version", version)
    with FakeKaggle(SERVED) as fake:
        env = kaggle_env(tmp_path, fake, credentials=config_dir, config_dir=config_dir)
        if not config_dir:
            write_kaggle_json(Path(env["XDG_CONFIG_HOME"]) / "kaggle")
        result = project.run("fetch", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    info = assert_fetched(project, [VECTORS_FILE], "kaggle")
    served = zipfile.ZipFile(io.BytesIO(SERVED)).read(VECTORS_FILE)
    assert (project.path / "data" / "raw" / VECTORS_FILE).read_bytes() == served
    assert info["dataset"] == project.params["data"]["dataset"] == "daavoo/3d-mnist"
    assert info["version"] == version and info["zip_sha256"] == sha256_bytes(SERVED)
    posts = [r for r in fake.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == [DOWNLOAD_PATH]
    assert posts[0]["json"]["ownerSlug"] == "daavoo" and posts[0]["json"]["datasetSlug"] == "3d-mnist"
    assert posts[0]["json"].get("datasetVersionNumber") == version
    assert "authorization" in {name.lower() for name in posts[0]["headers"]}
    assert [r["path"] for r in fake.requests if r["method"] == "GET"] == [fake.blob_path]
    assert_no_secret(project.path, result.stdout + result.stderr)


NO_CREDENTIALS = ["kaggle.json", "credentials", "data.source=synthetic"]
CREDENTIALS = {  # whether KAGGLE_CONFIG_DIR is set, the kaggle.json in it (None: none), and fragments of the line
    "empty-KAGGLE_CONFIG_DIR": (True, None, NO_CREDENTIALS),
    "nothing-in-HOME": (False, None, NO_CREDENTIALS),
    "invalid-json": (True, "{not json", ["is not valid JSON", "kaggle.json"]),
    "no-key": (True, '{"username": "tester"}', ["needs both 'username' and 'key'", "kaggle.json"]),
}


@pytest.mark.parametrize("case", CREDENTIALS)
def test_kaggle_without_usable_credentials_says_how_to_fix_and_sends_nothing(project, tmp_path, case):
    """No kaggle.json and no KAGGLE_* credentials, or a kaggle.json that is unusable: one line, and no request."""
    config_dir, content, expected = CREDENTIALS[case]
    with FakeKaggle(SERVED) as fake:
        env = kaggle_env(tmp_path, fake, credentials=False, config_dir=config_dir)
        if content is not None:
            written(tmp_path / "kaggle-config" / "kaggle.json", content)
        line = error_line(project.run("fetch", env=env, timeout=120), alone=False)
    assert all(fragment in line for fragment in expected), line
    assert fake.requests == []
    project.assert_nothing_fetched()


def zip_with_entry(entry: str):
    """A maker of the tiny dataset zip plus an entry named `entry`, and the fragments of the line refusing it."""
    return lambda folder: written(folder / "evil.zip", tiny_zip_bytes({entry: b"owned"})), ["unsafe entry", repr(entry)]


def assert_no_entry_escaped(tmp_path: Path) -> None:
    assert list(tmp_path.rglob("evil.txt")) == [] and not Path("/evil.txt").exists()


KAGGLE_FAULTS = {  # what the fake does wrong, and fragments of the error line
    "401": ({"status": 401}, ["HTTP 401", "kaggle.json", "daavoo/3d-mnist/1"]),
    "403": ({"status": 403}, ["HTTP 403", "terms", "daavoo/3d-mnist/1"]),
    "404": ({"status": 404}, ["HTTP 404", "data.dataset", "data.version", "daavoo/3d-mnist/1"]),
    "500": ({"status": 500}, ["HTTP 500", "data.source=synthetic", "daavoo/3d-mnist/1"]),
    "blob-500": ({"blob_status": 500}, ["HTTP 500", "daavoo/3d-mnist/1"]),
    "stalled-server": ({"hang": True}, ["timed out", "data.timeout"]),
    "zip-without-vectors": ({"zip_bytes": tiny_zip_bytes({"a.txt": b"hi"}, False)}, [f"holds no {VECTORS_FILE}"]),
    "html-instead-of-zip": ({"zip_bytes": b"<html><body>Please sign in</body></html>"}, ["is not a valid zip file"]),
    "zip-cut-in-half": ({"zip_bytes": SERVED[: len(SERVED) // 2]}, ["is not a valid zip file"]),
    "zip-entry-dotdot": ({"zip_bytes": tiny_zip_bytes({EVIL: b"owned"})}, ["unsafe entry", repr(EVIL)]),
}


@pytest.mark.parametrize("case", KAGGLE_FAULTS)
def test_kaggle_faults_end_in_one_line_of_advice_and_leak_no_key(project, tmp_path, case):
    """An HTTP error, a server that never answers, or a download that is not the dataset's zip: one line naming the
    problem and what to check, nothing written, and the planted key nowhere."""
    fault, expected = KAGGLE_FAULTS[case]
    if fault.get("hang"):
        project.set("data.timeout", 1)  # fail after a second instead of hanging
    with FakeKaggle(SERVED) as fake:
        for name, value in fault.items():
            setattr(fake, name, value)
        result = fetch_kaggle(project, tmp_path, fake)
    line = error_line(result, alone=False)
    assert all(fragment in line for fragment in expected), line
    project.assert_nothing_fetched()
    assert_no_secret(project.path, result.stdout + result.stderr)
    assert_no_entry_escaped(tmp_path)


def test_kaggle_connection_refused_or_a_download_cut_short_fails_cleanly(project, tmp_path):
    """Nothing listening where the client is sent, or a body cut off mid-transfer (after the client's own retries):
    one error line with advice, not a traceback, and nothing written."""
    fake = FakeKaggle(SERVED)
    with socket.socket() as bound:  # a port the OS gave, held but never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        fake.port = bound.getsockname()[1]
        line = error_line(fetch_kaggle(project, tmp_path, fake), alone=False)
    assert "could not connect" in line and "data.source=synthetic" in line, line
    project.assert_nothing_fetched()
    # The kaggle client sleeps 2+4+8+16+32 s between its retries; make time.sleep instant in the stage's process.
    (tmp_path / "hooks").mkdir()
    hooks = written(tmp_path / "hooks" / "sitecustomize.py", "import time\ntime.sleep = lambda seconds: None\n").parent
    with FakeKaggle(SERVED) as fake:
        fake.truncate_blob = True
        env = kaggle_env(tmp_path, fake)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
        result = project.run("fetch", env=env, timeout=120)
    assert len([r for r in fake.requests if r["method"] == "GET"]) > 1  # the client did retry, without waiting
    assert "was cut short" in error_line(result, alone=False)
    project.assert_nothing_fetched()


def tiny_clouds(labels=None) -> dict:
    """A point-cloud file (see write_h5) of a tiny cloud per label, by default per pair of rows of the tiny vectors."""
    labels = PAIR_LABELS if labels is None else labels
    return {str(index): {"points": np.zeros((5, 3)), "@label": label} for index, label in enumerate(labels)}


def clouds_beside(labels=None, notes: bool = False):
    """A maker for a folder of the tiny vectors and a training cloud file with these labels (and a stray file)."""

    def make(folder: Path) -> Path:
        write_tiny_vectors(folder / VECTORS_FILE)
        written(folder / CLOUDS_FILE, tiny_clouds(labels))
        if notes:
            written(folder / "notes.txt", "not part of the dataset")
        return folder

    return make


def at(index, value):

    def change(array):
        array[index] = value
        return array

    return change


def spoiled(split: str, x=lambda x: x, y=lambda y: y, drop: bool = False):
    """A maker for the tiny vectors file (20 train, 10 test rows) with one split's x and y passed through changes, or
    left out."""

    def make(folder: Path) -> Path:
        splits = {"train": tiny_split(20), "test": tiny_split(10, seed=1)}
        splits[split].x, splits[split].y = x(splits[split].x), y(splits[split].y)
        splits = {name: data for name, data in splits.items() if not (drop and name == split)}
        write_vectors(folder / VECTORS_FILE, splits)
        return folder / VECTORS_FILE

    return make


def halved(path: Path) -> Path:
    return written(path, path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("make", "files"),
    [
        pytest.param(lambda folder: written(folder / "3d-mnist.zip", SERVED), [VECTORS_FILE], id="zip"),
        pytest.param(clouds_beside(notes=True), [CLOUDS_FILE, VECTORS_FILE], id="folder"),
        pytest.param(lambda folder: write_tiny_vectors(folder / "vectors-copy.h5"), [VECTORS_FILE], id="bare-h5"),
    ],
)
def test_local_copy_is_fetched_and_a_failed_fetch_after_it_keeps_it(project, tmp_path, make, files):
    """data.path may be the zip, a folder of its files, or the vectors .h5 alone; only dataset files are copied."""
    (tmp_path / "downloads").mkdir()
    path = make(tmp_path / "downloads")
    result = project.fetch_local(path)
    assert result.returncode == 0, result.stderr
    assert assert_fetched(project, files, "local")["path"] == str(path)
    # A fetch that fails leaves the data/raw of the last good fetch untouched.
    pinned = manifest(project)
    (tmp_path / "bad").mkdir()
    assert "NaN" in error_line(project.fetch_local(spoiled("train", x=at((3, 7), np.nan))(tmp_path / "bad")))
    assert assert_fetched(project, files, "local") == pinned  # data/raw still as the same manifest pins it


BAD_COPIES = {  # a maker of data.path in a scratch folder, and fragments of the error line
    "missing-path": (lambda folder: folder / "nowhere.zip", ["does not exist", "nowhere.zip"]),
    "folder-without-files": (lambda folder: folder, [f"holds no {VECTORS_FILE}"]),
    "text-file": (lambda folder: written(folder / "a.txt", "elsewhere"), ["neither a zip, a folder nor an .h5"]),
    "4000-columns": (spoiled("train", x=lambda x: x[:, :4000]), ["train", "(20, 4000)", "4096"]),
    "nan-in-x": (spoiled("train", x=at((3, 7), np.nan)), ["train", "NaN"]),
    "label-10": (spoiled("test", y=at(0, 10)), ["test", "labels must lie in 0..9", "..10"]),
    "label-minus-1": (spoiled("train", y=at(4, -1)), ["train", "labels must lie in 0..9", "-1.."]),
    "inf-in-x": (spoiled("test", x=at((1, 9), np.inf)), ["test", "NaN or Inf"]),
    "above-1": (spoiled("train", x=at((2, 5), 1.5)), ["train", "X must lie in [0, 1]", "1.5", "fetch the data again"]),
    "x-and-y-lengths-differ": (spoiled("train", y=lambda y: y[:-3]), ["train", "20 rows but y has 17"]),
    "empty-split": (spoiled("test", x=lambda x: x[:0], y=lambda y: y[:0]), ["test", "the split is empty"]),
    # rows 4 and 5 are a digit and its rotated copy, both labelled 2
    "pair-disagrees": (spoiled("train", y=at(5, 3)), ["train", "rows 4 and 5 have labels 2 and 3"]),
    "clouds-too-few": (clouds_beside(range(9)), ["9 clouds for 20 vectors"]),
    "clouds-off-by-3": (clouds_beside((PAIR_LABELS + 3) % 10), ["cloud 0 is labelled 3 but vectors 0 and 1 are 0"]),
    "h5-cut-in-half": (lambda d: halved(write_tiny_vectors(d / VECTORS_FILE)), ["not a readable HDF5 file"]),
    "no-test-split": (spoiled("test", drop=True), ["missing datasets", "X_test", "y_test"]),
    "not-hdf5": (lambda folder: written(folder / VECTORS_FILE, "this is not HDF5"), ["not a readable HDF5 file"]),
    "empty-data-path": (lambda folder: "", ["data.path is empty"]),
    "zip-entry-dotdot": zip_with_entry(EVIL),
    "zip-entry-absolute": zip_with_entry("/evil.txt"),
    "zip-entry-backslashes": zip_with_entry("..\\..\\evil.txt"),
}


@pytest.mark.parametrize("case", BAD_COPIES)
def test_bad_local_copy_is_refused(project, tmp_path, case):
    """In-process, each case without a process start: the stage's one line for a refused copy is shown above."""
    make, expected = BAD_COPIES[case]
    (tmp_path / "downloads").mkdir()
    section = {**project.params["data"], "source": "local", "path": str(make(tmp_path / "downloads"))}
    with pytest.raises(PipelineError) as refused:
        fetch(section, project.path / "data" / "raw", project.path / "data" / "manifest.json")
    assert all(fragment in str(refused.value) for fragment in expected), refused.value
    project.assert_nothing_fetched()
    assert_no_entry_escaped(tmp_path)
