"""Hostile and odd input files: each ends in one error line, never a crash, a hang, a memory blow-up or an overwrite.

The classes follow issue 9: declared sizes, inflation, non-regular files, types and values, unexpected structure,
and the last-resort line for whatever slips through. Params that explode are in test_params.py, --csv overwrites
(which need a model) in test_predict.py.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from mnist3d.errors import PipelineError, reading, run_stage
from mnist3d.predict import read_samples
from mnist3d.readers import read_point_clouds
from mnist3d.vectors import VECTORS_FILE, write_vectors
from tests.conftest import ROOT, clean_env, error_line, tiny_split, write_tiny_vectors

ADDRESS_SPACE = 3 << 30  # enough for Python, numpy, h5py and matplotlib; far below what any bomb here asks for


def limit_memory() -> None:
    """In the child: cap its address space, so a regression fails fast with MemoryError instead of swapping."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))  # no file it writes may grow past 256 MB


def predict_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m mnist3d predict ARGS` in its own process, under the memory cap."""
    return subprocess.run(
        [sys.executable, "-m", "mnist3d", "predict", *args],
        cwd=cwd,
        env=clean_env({"PYTHONPATH": str(ROOT), **(env or {})}),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )


@contextmanager
def watched_fifo(path: Path):
    """A FIFO at `path`; yields a list that gets True if anyone opens it for reading (and then sees EOF, not a hang)."""
    os.mkfifo(path)
    opened, done = [], threading.Event()

    def watch():
        while not done.is_set():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only while a reader has it open
                opened.append(True)
            except OSError as error:
                if error.errno != errno.ENXIO:
                    return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield opened
    finally:
        done.set()
        watcher.join(timeout=5)


# --- 1. declared sizes are checked before reading ---------------------------------------------------------------------


def lazy_cloud_file(path: Path, points: int) -> Path:
    """A point-cloud file whose one group declares `points` x 3 float64, stored lazily in a few kB."""
    with h5py.File(path, "w") as h5:
        group = h5.create_group("0")
        group.create_dataset("points", shape=(points, 3), dtype="f8", chunks=(100_000, 3))
        group.attrs["label"] = 3
    return path


def lazy_vectors_file(path: Path, rows: int) -> Path:
    with h5py.File(path, "w") as h5:
        for split in ("train", "test"):
            h5.create_dataset(f"X_{split}", shape=(rows, 4096), dtype="f8", chunks=(64, 4096))
            h5.create_dataset(f"y_{split}", shape=(rows,), dtype="i8")
    return path


def npy_claiming(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npy whose header claims `shape` of float64, followed by 4 kB of data."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": shape})
        handle.write(bytes(4096))
    return path


BOMBS = [
    pytest.param(lambda d: lazy_cloud_file(d / "clouds.h5", 500_000_000), "clouds.h5 group 0 points", id="h5-cloud"),
    pytest.param(lambda d: lazy_vectors_file(d / "v.h5", 3_000_000), "v.h5 X_test declares", id="h5-vectors"),
    pytest.param(lambda d: npy_claiming(d / "grids.npy", (5_000_000, 4096)), "grids.npy declares", id="npy-header"),
]


@pytest.mark.parametrize(("make", "fragment"), BOMBS)
def test_declared_sizes_are_refused_before_reading(tmp_path, make, fragment):
    """A file of a few kB that declares tens of GB: one line naming the limit, within a 3 GB address space."""
    path = make(tmp_path)
    assert path.stat().st_size < 100_000
    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    line = error_line(predict_cli(tmp_path, path.name))
    assert fragment in line and "MB limit on input files" in line and "MNIST3D_MAX_FILE_MB" in line, line


def test_training_reader_refuses_a_declared_size_bomb(tmp_path):
    """The reader preprocess uses (read_point_clouds) checks every group's declared size before reading any points."""
    path = lazy_cloud_file(tmp_path / "train_point_clouds.h5", 500_000_000)
    code = (
        "from mnist3d.errors import PipelineError\nfrom mnist3d.readers import read_point_clouds\n"
        f"try:\n    read_point_clouds({str(path)!r})\nexcept PipelineError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env({"PYTHONPATH": str(ROOT)}),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 0 and "MB limit on input files" in result.stdout, result.stderr


def test_the_limit_can_be_raised_and_must_be_a_number(tmp_path, monkeypatch):
    path = write_tiny_vectors(tmp_path / "v.h5", train=20, test=200)  # X_test is 6.25 MB
    monkeypatch.setenv("MNIST3D_MAX_FILE_MB", "5")
    with pytest.raises(PipelineError, match="over the 5 MB limit"):
        read_samples(path)
    monkeypatch.setenv("MNIST3D_MAX_FILE_MB", "7")
    assert len(read_samples(path).index) == 200
    monkeypatch.setenv("MNIST3D_MAX_FILE_MB", "lots")
    with pytest.raises(PipelineError, match="MNIST3D_MAX_FILE_MB must be a positive whole number"):
        read_samples(path)


# --- 2. zip members may not inflate past the limit ------------------------------------------------------------------


def bomb_zip(path: Path, member_mb: int) -> Path:
    """A valid dataset zip plus a point-cloud member of `member_mb` MB of zeros (it compresses ~1000:1)."""
    vectors = write_tiny_vectors(path.parent / VECTORS_FILE)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.write(vectors, VECTORS_FILE)
        with zipped.open("test_point_clouds.h5", "w") as member:
            for _ in range(member_mb):
                member.write(bytes(1 << 20))
    return path


def test_zip_member_that_inflates_past_the_limit_is_refused_before_writing(project, tmp_path):
    """A 64 MB member against a 16 MB limit: refused on its declared size, and nothing lands in data/."""
    (tmp_path / "downloads").mkdir()
    archive = bomb_zip(tmp_path / "downloads" / "3d-mnist.zip", 64)
    assert archive.stat().st_size < 1 << 20
    project.set("data.source", "local")
    project.set("data.path", str(archive))
    line = error_line(project.run("fetch", env={"MNIST3D_MAX_FILE_MB": "16"}), alone=False)
    assert "member test_point_clouds.h5 declares 64 MB, over the 16 MB limit" in line, line
    assert not (project.path / "data").exists() or list((project.path / "data").iterdir()) == []


def test_zip_member_that_lies_about_its_size_is_refused(project, tmp_path):
    """A member whose headers say 1 kB but that inflates to 8 MB never writes more than it declared."""
    (tmp_path / "downloads").mkdir()
    archive = bomb_zip(tmp_path / "downloads" / "3d-mnist.zip", 8)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        info = zipped.getinfo("test_point_clouds.h5")
    real = (8 << 20).to_bytes(4, "little")
    assert data.count(real) == 2  # the local header and the central directory entry
    archive.write_bytes(bytes(data).replace(real, (1024).to_bytes(4, "little")))
    assert info.file_size == 8 << 20
    project.set("data.source", "local")
    project.set("data.path", str(archive))
    line = error_line(project.run("fetch"), alone=False)
    assert "is not a valid zip file" in line, line
    assert not (project.path / "data").exists() or list((project.path / "data").iterdir()) == []


# --- 3. non-regular files are refused before they are opened ----------------------------------------------------------


@pytest.mark.parametrize("where", ["data.path", "file-in-folder"])
def test_fifo_as_data_path_is_refused_without_opening_it(project, tmp_path, where):
    folder = tmp_path / "downloads"
    folder.mkdir()
    fifo = folder / (VECTORS_FILE if where == "file-in-folder" else "3d-mnist.zip")
    with watched_fifo(fifo) as opened:
        project.set("data.source", "local")
        project.set("data.path", str(folder if where == "file-in-folder" else fifo))
        line = error_line(project.run("fetch", timeout=60), alone=False)
    assert "not a regular file" in line and str(fifo if where == "data.path" else fifo) in line, line
    assert opened == [], "the fetch opened the FIFO"


def test_fifo_as_the_input_to_classify_is_refused_without_opening_it(tmp_path):
    refused = pytest.raises(PipelineError, match=r"cloud.npy is not a regular file \(a pipe, socket or device\)")
    with watched_fifo(tmp_path / "cloud.npy") as opened, refused:
        read_samples(tmp_path / "cloud.npy")
    assert opened == []


def test_atomic_writes_never_replace_a_non_regular_file(tmp_path):
    from mnist3d.files import atomic_path

    os.mkfifo(tmp_path / "out.json")
    refused = pytest.raises(PipelineError, match="exists and is not a regular file; refusing to replace it")
    with refused, atomic_path(tmp_path / "out.json") as temp:
        temp.write_text("{}")
    assert not (tmp_path / "out.json").is_file() and (tmp_path / "out.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


# --- 5. types and values --------------------------------------------------------------------------------------------


def cloud_file(path: Path, points=None, label=3, points_as_group=False) -> Path:
    with h5py.File(path, "w") as h5:
        for i in range(2):
            group = h5.create_group(str(i))
            if points_as_group:
                group.create_group("points")
            else:
                group.create_dataset(
                    "points", data=np.random.default_rng(i).random((50, 3)) if points is None else points
                )
            group.attrs["label"] = label
    return path


def vectors_with_labels(path: Path, labels, rows: int | None = None) -> Path:
    with h5py.File(path, "w") as h5:
        h5["X_test"] = tiny_split(len(labels) if rows is None else rows).x
        h5["y_test"] = labels
    return path


def partly_labelled(path: Path) -> Path:
    cloud_file(path)
    with h5py.File(path, "a") as h5:
        del h5["1"].attrs["label"]
    return path


TYPE_CASES = [
    (lambda d: np.save(d / "c.npy", tiny_split(1).x.astype(np.complex128)) or d / "c.npy", "dtype complex128"),
    (lambda d: np.save(d / "p.npy", np.eye(3) + 0j) or d / "p.npy", "dtype complex128"),
    (
        lambda d: vectors_with_labels(d / "s.h5", np.array([b"7", b"1"])),
        "y_test: values have dtype |S1, expected real numbers",
    ),
    (lambda d: vectors_with_labels(d / "f.h5", np.array([7.0, 1.5])), "labels have dtype float64"),
    (lambda d: vectors_with_labels(d / "m.h5", np.array([-7, 1])), "labels must lie in 0..9, found -7..1"),
    (lambda d: vectors_with_labels(d / "b.h5", np.array([42, 1])), "labels must lie in 0..9, found 1..42"),
    (lambda d: cloud_file(d / "cs.h5", label="seven"), "labels have dtype <U5"),
    (lambda d: cloud_file(d / "cf.h5", label=4.5), "labels have dtype float64"),
    (lambda d: cloud_file(d / "cm.h5", label=-7), "labels must lie in 0..9, found -7..-7"),
    (lambda d: cloud_file(d / "cb.h5", label=42), "labels must lie in 0..9, found 42..42"),
    (lambda d: (d / "huge.txt").write_text("1e308 0 0\n-1e308 1 0\n0 0 1\n") and d / "huge.txt", "too large"),
    (lambda d: cloud_file(d / "ch.h5", points=np.array([[1e308, 0, 0], [-1e308, 1, 0]])), "too large"),
    (lambda d: cloud_file(d / "cx.h5", points=np.ones((5, 3)) * (1 + 1j)), "dtype complex128"),
]


@pytest.mark.parametrize(("make", "fragment"), TYPE_CASES, ids=[f"type-{i}" for i in range(len(TYPE_CASES))])
def test_types_and_values_are_checked_after_every_conversion(tmp_path, make, fragment):
    """Complex values, coordinates that overflow, and labels that are not integers in 0..9 are refused."""
    with pytest.raises(PipelineError) as caught:
        read_samples(make(tmp_path))
    assert fragment in str(caught.value), caught.value


def test_training_clouds_that_overflow_float32_are_refused(tmp_path):
    """1e300 is a fine float64 but Inf as the float32 that training computes in."""
    path = cloud_file(tmp_path / "train_point_clouds.h5", points=np.array([[1e300, 0, 0], [0, 1, 0]]))
    with pytest.raises(PipelineError, match="group 0: points hold NaN or Inf \\(as float32\\)"):
        read_point_clouds(path)


# --- 6. unexpected structure ------------------------------------------------------------------------------------------


def group_where_x_is(path: Path) -> Path:
    with h5py.File(path, "w") as h5:
        h5.create_group("X_test")
    return path


PLY_HEAD = "ply\nformat {}\nelement vertex {}\n{}end_header\n"
XYZ = "property float x\nproperty float y\nproperty float z\n"

STRUCTURE_CASES = [
    (lambda d: group_where_x_is(d / "g.h5"), "X_test is a group, not a dataset"),
    (lambda d: cloud_file(d / "pg.h5", points_as_group=True), "points is a group, not a dataset"),
    (lambda d: (d / "z.ply").write_text(PLY_HEAD.format("ascii 1.0", 0, XYZ)) and d / "z.ply", "has no vertices"),
    (
        lambda d: (
            (d / "zb.ply").write_bytes(PLY_HEAD.format("binary_little_endian 1.0", 0, XYZ).encode()) and d / "zb.ply"
        ),
        "has no vertices",
    ),
    (
        lambda d: (
            (d / "dup.ply").write_bytes(
                PLY_HEAD.format("binary_little_endian 1.0", 1, XYZ + "property float x\n").encode() + bytes(16)
            )
            and d / "dup.ply"
        ),
        "PLY property 'x' is declared twice",
    ),
    (lambda d: vectors_with_labels(d / "few.h5", np.array([1, 1]), rows=3), "y_test has shape (2,) but X_test has 3"),
    (lambda d: vectors_with_labels(d / "wide.h5", np.ones((2, 2), int)), "y_test has shape (2, 2) but X_test has 2"),
    (lambda d: partly_labelled(d / "partly.h5"), "group 1 has no label attribute but others have one"),
]


@pytest.mark.parametrize(
    ("make", "fragment"), STRUCTURE_CASES, ids=[f"structure-{i}" for i in range(len(STRUCTURE_CASES))]
)
def test_unexpected_structure_is_named(tmp_path, make, fragment):
    with pytest.raises(PipelineError) as caught:
        read_samples(make(tmp_path))
    assert fragment in str(caught.value), caught.value


def test_a_column_of_labels_is_read_as_one_label_per_row(tmp_path):
    samples = read_samples(vectors_with_labels(tmp_path / "column.h5", np.array([[7], [1]])))
    assert samples.labels.tolist() == [7, 1]


def test_fetch_checks_every_point_cloud_group(project, tmp_path):
    """A group far down the file with a dataset where the points should be is caught by the fetch, not by train."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    write_vectors(folder / VECTORS_FILE, {"train": tiny_split(4), "test": tiny_split(2)})
    with h5py.File(folder / "train_point_clouds.h5", "w") as h5:
        for i in range(2):
            h5.create_group(str(i)).attrs["label"] = 1
            h5[str(i)]["points"] = np.ones((4, 3)) if i == 0 else np.ones((4, 2))
    project.set("data.source", "local")
    project.set("data.path", str(folder))
    line = error_line(project.run("fetch"), alone=False)
    assert "group 1: points have shape (4, 2), expected (N, 3)" in line, line


# --- only data stored in the file is read (issue 16) ----------------------------------------------------------------


def stored_elsewhere(folder: Path, kind: str) -> tuple[Path, Path]:
    """A vectors file whose X_test is not stored in it, in the way `kind` names, and the file its data is in."""
    path, elsewhere = write_tiny_vectors(folder / VECTORS_FILE), folder / "elsewhere.bin"
    with h5py.File(path, "a") as h5:
        x = h5["X_test"][()]
        del h5["X_test"]
        if kind == "external-storage":
            elsewhere.write_bytes(x.tobytes())
            h5.create_dataset("X_test", x.shape, x.dtype, external=[(str(elsewhere), 0, x.nbytes)])
        elif kind == "soft-link":
            h5["X_copy"] = x
            h5["X_test"] = h5py.SoftLink("/X_copy")
        else:
            with h5py.File(elsewhere, "w") as other:
                other["X_test"] = x
            if kind == "external-link":
                h5["X_test"] = h5py.ExternalLink(str(elsewhere), "/X_test")
            else:
                layout = h5py.VirtualLayout(x.shape, x.dtype)
                layout[:] = h5py.VirtualSource(str(elsewhere), "X_test", x.shape)
                h5.create_virtual_dataset("X_test", layout)
    elsewhere.unlink(missing_ok=True)
    return path, elsewhere


ELSEWHERE = {
    "external-storage": "X_test is stored outside the file (HDF5 external storage)",
    "external-link": "X_test is an external link (to another file)",
    "soft-link": "X_test is a soft link",
    "virtual": "X_test is a virtual dataset",
}


@pytest.mark.parametrize("kind", ELSEWHERE)
def test_data_stored_outside_the_file_is_refused_before_it_is_read(project, tmp_path, kind):
    """predict and fetch end in one line without opening the other file: when it was a FIFO, both hung for ever."""
    (tmp_path / "downloads").mkdir()
    path, elsewhere = stored_elsewhere(tmp_path / "downloads", kind)
    project.set("data.source", "local")
    project.set("data.path", str(path.parent))
    with watched_fifo(elsewhere) as opened:  # a process that opens it sees an empty file instead of hanging
        lines = [error_line(predict_cli(project.path, str(path))), error_line(project.run("fetch", timeout=120))]
    assert opened == [], "the other file was opened"
    for line in lines:
        assert f"{VECTORS_FILE}: {ELSEWHERE[kind]}" in line and "only data stored in the file is read" in line, line


# --- 8. the last resort ---------------------------------------------------------------------------------------------


def test_an_unexpected_error_ends_in_one_line_that_names_the_file(capsys, monkeypatch):
    monkeypatch.delenv("MNIST3D_DEBUG", raising=False)

    def main():
        with reading("data/raw/odd.h5"):
            raise KeyError("nothing foresaw this")

    with pytest.raises(SystemExit) as exit_:
        run_stage(main, "the fetch stage")
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: unexpected KeyError while reading data/raw/odd.h5 ('nothing foresaw this'); this is a bug or an input "
        "the pipeline does not handle: please report it, and set MNIST3D_DEBUG=1 to see the traceback"
    ]
    with pytest.raises(SystemExit):
        run_stage(lambda: [][1], "the plot stage")
    assert capsys.readouterr().err.startswith(
        "error: unexpected IndexError in the plot stage (list index out of range)"
    )
    monkeypatch.setenv("MNIST3D_DEBUG", "1")
    with pytest.raises(KeyError, match="nothing foresaw this"):
        run_stage(main, "the fetch stage")


def test_an_unexpected_error_in_a_real_process_shows_no_traceback(tmp_path):
    """A stage's own process: one line, exit 1; MNIST3D_DEBUG=1 brings the traceback back."""
    code = "import sys\nfrom mnist3d.errors import run_stage\nrun_stage(lambda: sys.setrecursionlimit(-1))\n"
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=clean_env({"PYTHONPATH": str(ROOT), **debug}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        for debug in ({}, {"MNIST3D_DEBUG": "1"})
    ]
    assert error_line(runs[0]).startswith("error: unexpected ValueError in the -c stage")
    assert runs[1].returncode == 1 and "Traceback" in runs[1].stderr


def test_complex_vectors_in_a_vectors_file(tmp_path):
    """Complex X in the stage reader (fetch, preprocess and plot all read through read_vectors)."""
    from mnist3d.readers import read_vectors

    path = tmp_path / VECTORS_FILE
    write_vectors(path, {"train": tiny_split(4), "test": tiny_split(2)})
    with h5py.File(path, "a") as h5:
        del h5["X_test"]
        h5["X_test"] = tiny_split(2).x.astype(np.complex64)
    with pytest.raises(PipelineError, match="X_test: values have dtype complex64, expected real numbers"):
        read_vectors(path)
