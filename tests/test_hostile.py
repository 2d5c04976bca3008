"""Hostile and odd input files (issue 9): each ends in one error line, never a crash, a hang, a memory blow-up or an
overwrite. Params that explode are in test_params.py, --csv overwrites (which need a model) in test_predict.py."""

import errno
import os
import resource
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from mnist3d.errors import PipelineError, reading, run_stage
from mnist3d.io.files import atomic_path
from mnist3d.io.formats import read_input
from mnist3d.io.readers import read_point_clouds, read_vectors
from mnist3d.io.schema import VECTORS_FILE, write_vectors
from tests.conftest import build_h5_item, error_line, predict_cli, run_python, tiny_split, write_tiny_vectors, written

ADDRESS_SPACE = 3 << 30  # enough for Python, numpy, h5py and matplotlib; far below what any bomb here asks for


def limit_memory() -> None:
    """In the child: cap its address space, so a regression fails fast with MemoryError instead of swapping."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))  # no file it writes may grow past 256 MB


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


# 1. declared sizes are checked before reading
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


BOMBS = {
    "h5-cloud": (lambda d: lazy_cloud_file(d / "clouds.h5", 500_000_000), "clouds.h5 group 0 points"),
    "h5-vectors": (lambda d: lazy_vectors_file(d / "v.h5", 3_000_000), "v.h5 X_test declares"),
    "npy-header": (lambda d: npy_claiming(d / "grids.npy", (5_000_000, 4096)), "grids.npy declares"),
}


@pytest.mark.parametrize("bomb", BOMBS)
def test_declared_sizes_are_refused_before_reading(project, bomb):
    """A file of a few kB that declares tens of GB: one line naming the limit, within a 3 GB address space."""
    make, fragment = BOMBS[bomb]
    path = make(project.path)
    assert path.stat().st_size < 100_000
    line = error_line(predict_cli(project.path, path.name, preexec_fn=limit_memory, timeout=120))
    assert fragment in line and "MB limit on input files" in line and "MNIST3D_MAX_FILE_MB" in line, line


def test_the_limit_can_be_raised_and_must_be_a_number_and_the_training_reader_checks_it(tmp_path, monkeypatch):
    path = write_tiny_vectors(tmp_path / "v.h5", train=20, test=200)  # X_test is 6.25 MB
    monkeypatch.setenv("MNIST3D_MAX_FILE_MB", "5")
    with pytest.raises(PipelineError, match="over the 5 MB limit"):
        read_input(path)
    monkeypatch.setenv("MNIST3D_MAX_FILE_MB", "7")
    assert len(read_input(path).index) == 200
    monkeypatch.setenv("MNIST3D_MAX_FILE_MB", "lots")
    with pytest.raises(PipelineError, match="MNIST3D_MAX_FILE_MB must be a positive whole number"):
        read_input(path)
    # the reader preprocess uses (read_point_clouds) checks every group's declared size before reading any points,
    # under the default limit and a 3 GB address space
    monkeypatch.delenv("MNIST3D_MAX_FILE_MB")
    path = lazy_cloud_file(tmp_path / "train_point_clouds.h5", 500_000_000)
    code = (
        "from mnist3d.errors import PipelineError\nfrom mnist3d.io.readers import read_point_clouds\n"
        f"try:\n    read_point_clouds({str(path)!r})\nexcept PipelineError as error:\n    print(error)\n"
    )
    result = run_python("-c", code, preexec_fn=limit_memory, timeout=120)
    assert result.returncode == 0 and "MB limit on input files" in result.stdout, result.stderr


# 2. zip members may not inflate past the limit
def bomb_zip(folder: Path, member_mb: int) -> Path:
    """A valid dataset zip plus a point-cloud member of `member_mb` MB of zeros (it compresses ~1000:1)."""
    folder.mkdir()
    vectors, path = write_tiny_vectors(folder / VECTORS_FILE), folder / "3d-mnist.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.write(vectors, VECTORS_FILE)
        with zipped.open("test_point_clouds.h5", "w") as member:
            for _ in range(member_mb):
                member.write(bytes(1 << 20))
    return path


ZIP_BOMBS = {  # the member's size in MB, whether its headers then lie that it is 1 kB, and the line's words
    "declared-past-the-limit": (64, False, "member test_point_clouds.h5 declares 64 MB, over the 16 MB limit"),
    "lies-about-its-size": (8, True, "is not a valid zip file"),
}


@pytest.mark.parametrize("case", ZIP_BOMBS)
def test_zip_member_that_would_inflate_past_the_limit_is_refused_before_writing(project, tmp_path, case):
    """A 64 MB member against a 16 MB limit is refused on its declared size; one whose headers say 1 kB but that
    inflates to 8 MB never writes more than it declared. Nothing lands in data/."""
    member_mb, lie, fragment = ZIP_BOMBS[case]
    archive = bomb_zip(tmp_path / "downloads", member_mb)
    assert archive.stat().st_size < 1 << 20
    if lie:
        with zipfile.ZipFile(archive) as zipped:
            assert zipped.getinfo("test_point_clouds.h5").file_size == 8 << 20
        data, real = archive.read_bytes(), (8 << 20).to_bytes(4, "little")
        assert data.count(real) == 2  # the local header and the central directory entry
        archive.write_bytes(data.replace(real, (1024).to_bytes(4, "little")))
    line = error_line(project.fetch_local(archive, env={"MNIST3D_MAX_FILE_MB": "16"}), alone=False)
    assert fragment in line, line
    project.assert_nothing_fetched()


# 3. non-regular files are refused before they are opened
@pytest.mark.parametrize("where", ["data.path", "file-in-folder"])
def test_fifo_as_data_path_is_refused_without_opening_it(project, tmp_path, where):
    folder = tmp_path / "downloads"
    folder.mkdir()
    fifo = folder / (VECTORS_FILE if where == "file-in-folder" else "3d-mnist.zip")
    with watched_fifo(fifo) as opened:
        line = error_line(project.fetch_local(folder if where == "file-in-folder" else fifo), alone=False)
    assert "not a regular file" in line and str(fifo) in line, line
    assert opened == [], "the fetch opened the FIFO"


def test_a_fifo_to_classify_is_refused_unopened_and_atomic_writes_never_replace_one(tmp_path):
    refused = pytest.raises(PipelineError, match=r"cloud.npy is not a regular file \(a pipe, socket or device\)")
    with watched_fifo(tmp_path / "cloud.npy") as opened, refused:
        read_input(tmp_path / "cloud.npy")
    assert opened == []
    # atomic writes never replace a non-regular file
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "out.json")
    refused = pytest.raises(PipelineError, match="a pipe, socket or device stands where this output file goes")
    with refused, atomic_path(out / "out.json") as temp:
        temp.write_text("{}")
    assert not (out / "out.json").is_file() and (out / "out.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["out.json"]


# 5. types and values, 6. unexpected structure
def clouds(points=None, label=3) -> dict:
    """Two point-cloud groups (see write_h5), of 50 random points each unless given."""
    random = [np.random.default_rng(i).random((50, 3)) for i in range(2)]
    return {str(i): {"points": random[i] if points is None else points, "@label": label} for i in range(2)}


def vectors(labels, rows: int | None = None) -> dict:
    """A test split of tiny vectors with these labels (see write_h5)."""
    return {"X_test": tiny_split(len(labels) if rows is None else rows).x, "y_test": labels}


PLY = "ply\nformat {}\nelement vertex {}\nproperty float x\nproperty float y\nproperty float z\n{}end_header\n"
BINARY = "binary_little_endian 1.0"
REFUSED = {  # a file name, what to put there (see `written`), and a fragment of the error read_input (predict) raises
    # types and values, checked after every conversion: complex values, overflowing coordinates, labels not in 0..9
    "complex-vectors.npy": (tiny_split(1).x + 0j, "dtype complex128"),
    "complex-cloud.npy": (np.eye(3) + 0j, "dtype complex128"),
    "byte-labels.h5": (vectors(np.array([b"7", b"1"])), "y_test: values have dtype |S1, expected real numbers"),
    "float-labels.h5": (vectors([7.0, 1.5]), "labels have dtype float64"),
    "label-minus-7.h5": (vectors([-7, 1]), "labels must lie in 0..9, found -7..1"),
    "label-42.h5": (vectors([42, 1]), "labels must lie in 0..9, found 1..42"),
    "cloud-str-label.h5": (clouds(label="seven"), "labels have dtype <U5"),
    "cloud-float-label.h5": (clouds(label=4.5), "labels have dtype float64"),
    "cloud-label-minus-7.h5": (clouds(label=-7), "labels must lie in 0..9, found -7..-7"),
    "cloud-label-42.h5": (clouds(label=42), "labels must lie in 0..9, found 42..42"),
    "overflow.txt": ("1e308 0 0\n-1e308 1 0\n0 0 1\n", "too large"),
    "overflow.h5": (clouds(points=np.array([[1e308, 0, 0], [-1e308, 1, 0]])), "too large"),
    "complex-cloud.h5": (clouds(points=np.ones((5, 3)) * (1 + 1j)), "dtype complex128"),
    # unexpected structure
    "x-is-a-group.h5": ({"X_test": {}}, "X_test is a group, not a dataset"),
    "points-group.h5": ({str(i): {"points": {}, "@label": 3} for i in range(2)}, "points is a group, not a dataset"),
    "no-vertices.ply": (PLY.format("ascii 1.0", 0, ""), "has no vertices"),
    "no-vertices-binary.ply": (PLY.format(BINARY, 0, ""), "has no vertices"),
    "x2.ply": (PLY.format(BINARY, 1, "property float x\n").encode() + bytes(16), "PLY property 'x' is declared twice"),
    "fewer-labels.h5": (vectors([1, 1], rows=3), "y_test has shape (2,) but X_test has 3"),
    "labels-2d.h5": (vectors([[1, 1], [1, 1]]), "y_test has shape (2, 2) but X_test has 2"),
    "partly.h5": ({**clouds(), "1": {"points": np.ones((4, 3))}}, "group 1 has no label attribute but others have one"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_types_values_and_structure_are_checked(tmp_path, name):
    content, fragment = REFUSED[name]
    with pytest.raises(PipelineError) as caught:
        read_input(written(tmp_path / name, content))
    assert fragment in str(caught.value), caught.value


def test_the_stage_readers_check_types_too(tmp_path):
    """1e300 is a fine float64 but Inf as the float32 that training computes in; complex X in the vectors file that
    fetch, preprocess and plot read."""
    path = written(tmp_path / "train_point_clouds.h5", clouds(points=np.array([[1e300, 0, 0], [0, 1, 0]])))
    with pytest.raises(PipelineError, match="group 0: points hold NaN or Inf \\(as float32\\)"):
        read_point_clouds(path)
    with h5py.File(write_tiny_vectors(tmp_path / VECTORS_FILE, 4, 2), "a") as h5:
        del h5["X_test"]
        h5["X_test"] = tiny_split(2).x.astype(np.complex64)
    with pytest.raises(PipelineError, match="X_test: values have dtype complex64, expected real numbers"):
        read_vectors(tmp_path / VECTORS_FILE)


def test_a_column_of_labels_is_read_as_one_label_per_row(tmp_path):
    samples = read_input(written(tmp_path / "column.h5", vectors(np.array([[7], [1]]))))
    assert samples.labels.tolist() == [7, 1]


def test_fetch_checks_every_point_cloud_group(project, tmp_path):
    """A group far down the file with a dataset where the points should be is caught by the fetch, not by train."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    write_vectors(folder / VECTORS_FILE, {"train": tiny_split(4), "test": tiny_split(2)})
    written(
        folder / "train_point_clouds.h5",
        {"0": {"points": np.ones((4, 3)), "@label": 1}, "1": {"points": np.ones((4, 2)), "@label": 1}},
    )
    line = error_line(project.fetch_local(folder), alone=False)
    assert "group 1: points have shape (4, 2), expected (N, 3)" in line, line


# only data stored in the file is read (issue 16)
def stored_elsewhere(folder: Path, kind: str) -> tuple[Path, Path]:
    """A vectors file whose X_test is not stored in it, in the way `kind` names, and the file its data would be in."""
    path = write_tiny_vectors(folder / VECTORS_FILE)
    with h5py.File(path, "a") as h5:
        del h5["X_test"]
        build_h5_item(h5, h5, "X_test", (kind, [10, 4096], "<f8", [0.5]), folder)
    (folder / "elsewhere-X_test").unlink(missing_ok=True)
    return path, folder / "elsewhere-X_test"


ELSEWHERE = {
    "external-storage": "X_test is stored outside the file (HDF5 external storage)",
    "external-link": "X_test is an external link (to another file)",
    "soft": "X_test is a soft link",
    "virtual": "X_test is a virtual dataset",
}


@pytest.mark.parametrize("kind", ELSEWHERE)
def test_data_stored_outside_the_file_is_refused_before_it_is_read(project, tmp_path, kind):
    """predict and fetch end in one line without opening the other file: when it was a FIFO, both hung for ever."""
    (tmp_path / "downloads").mkdir()
    path, elsewhere = stored_elsewhere(tmp_path / "downloads", kind)
    with watched_fifo(elsewhere) as opened:  # a process that opens it sees an empty file instead of hanging
        lines = [
            error_line(predict_cli(project.path, path, preexec_fn=limit_memory, timeout=120)),
            error_line(project.fetch_local(path.parent)),
        ]
    assert opened == [], "the other file was opened"
    for line in lines:
        assert f"{VECTORS_FILE}: {ELSEWHERE[kind]}" in line and "only data stored in the file is read" in line, line


# 8. the last resort
def test_an_unexpected_error_ends_in_one_line_that_names_the_file(capsys, monkeypatch):
    monkeypatch.delenv("MNIST3D_DEBUG", raising=False)

    def main():
        with reading("data/raw/odd.h5"):
            raise KeyError("nothing foresaw this")

    with pytest.raises(SystemExit) as exit_:
        run_stage(main, "the fetch stage")
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
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
    quiet, debug = (run_python("-c", code, cwd=tmp_path, env=env, timeout=60) for env in ({}, {"MNIST3D_DEBUG": "1"}))
    assert error_line(quiet, fallback=True).startswith("error: unexpected ValueError in the -c stage")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
