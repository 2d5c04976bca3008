"""Nothing garbage in, nothing garbage out (issue 23): values checked between stages, outputs checked before the work,
names printed as text, copies bounded by the bytes copied, and memory bounded whatever the number of samples."""

import os
import time
import zlib

import h5py
import numpy as np
import pytest
import yaml

from mnist3d.errors import PipelineError, printable
from mnist3d.io.processed import read_processed, write_processed
from mnist3d.io.readers import read_vectors
from mnist3d.io.schema import VECTORS_FILE
from tests.conftest import (
    ROOT,
    TINY_ARCHITECTURE,
    error_line,
    files_under,
    predict_cli,
    write_tiny_processed,
    write_tiny_vectors,
)
from tests.test_hostile import limit_memory

RGB_GRIDS = np.random.default_rng(0).random((6, 16, 16, 16, 3), dtype=np.float32)
BAD_PROCESSED = {  # grids and labels as preprocess never writes them, and a fragment of the refusal
    "nan": (np.where(RGB_GRIDS > 0.99, np.nan, RGB_GRIDS), np.arange(6) % 10, "the grids hold NaN or Inf"),
    "inf": (np.where(RGB_GRIDS > 0.99, np.inf, RGB_GRIDS), np.arange(6) % 10, "the grids hold NaN or Inf"),
    "0-255-scale": (RGB_GRIDS * 255, np.arange(6) % 10, "the grids must lie in [0, 1], found 0.000927..255"),
    "negative": (RGB_GRIDS - 0.5, np.arange(6) % 10, "the grids must lie in [0, 1], found -0.5"),
    "label-12": (RGB_GRIDS, np.array([0, 0, 1, 1, 12, 12]), "labels must lie in 0..9, found 0..12"),
}


@pytest.mark.parametrize("case", BAD_PROCESSED)
def test_every_reader_of_processed_grids_checks_their_values(tmp_path, case):
    grids, labels, fragment = BAD_PROCESSED[case]
    write_processed(tmp_path / "test.npz", grids, labels)
    with pytest.raises(PipelineError) as refused:
        read_processed(tmp_path / "test.npz")
    assert str(refused.value).startswith(f"{tmp_path / 'test.npz'}: ") and fragment in str(refused.value), refused.value


def test_train_and_evaluate_refuse_bad_grids_before_tensorflow_and_write_nothing(project):
    """NaN in test.npz, Inf in train.npz: one line naming the file; the model already there and the metrics stay."""
    processed = project.path / "data" / "processed"
    write_tiny_processed(processed)
    (project.path / "models").mkdir()
    (project.path / "models" / "model.keras").write_bytes(b"the last good model")
    grids, labels, _ = BAD_PROCESSED["nan"]
    write_processed(processed / "test.npz", grids, labels)
    grids, labels, _ = BAD_PROCESSED["inf"]
    write_processed(processed / "train.npz", grids, labels)
    before = files_under(project.path)
    for stage, name in (("evaluate", "test.npz"), ("train", "train.npz")):
        line = error_line(project.run(stage))
        assert f"data/processed/{name}: the grids hold NaN or Inf" in line and "dvc repro --force preprocess" in line
    assert files_under(project.path) == before


def test_train_refuses_to_save_a_model_whose_loss_stopped_being_finite(tmp_path):
    """A fit whose loss turns NaN stops after that epoch; check_finite names the epoch and writes nothing."""
    from mnist3d.train.fit import check_finite, fit

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    params.update(augment="none", batch_size=4, validation_split=0.25)
    x = np.random.default_rng(0).random((16, 16, 16, 16, 3), dtype=np.float32)
    x[:, 0, 0, 0, 0] = np.nan  # what a diverging run produces, without waiting for it to diverge
    preprocess = {"colormap": "Oranges", "align": "none"}
    model, history, _ = fit(x, np.arange(16) // 2 % 10, params, TINY_ARCHITECTURE, 3, None, preprocess)
    assert len(history["loss"]) == 1  # stopped after the first epoch: the others could not recover
    with pytest.raises(PipelineError) as refused:
        check_finite(model, history, tmp_path / "model.keras")
    assert str(refused.value).startswith("the training loss stopped being finite in epoch 1 (nan); "), refused.value
    assert f"{tmp_path / 'model.keras'} was not written" in str(refused.value)


OUTPUT_IN_THE_WAY = {  # the stage, a path where something else stands, what stands there, and the fragment
    "fetch": ("data/manifest.json", "folder", "data/manifest.json: a folder stands where this output file goes"),
    "preprocess": ("data/processed", "file", "data/processed: a file stands where this output folder goes"),
    "train-file-for-models-folder": ("models", "file", "models/model.keras cannot be written: models is not a folder"),
    "train-folder-for-summary": ("metrics/train.json", "folder", "metrics/train.json: a folder stands where"),
    "evaluate": ("metrics/evaluate.json", "folder", "metrics/evaluate.json: a folder stands where this output file"),
    "plot": ("plots", "file", "plots: a file stands where this output folder goes"),
}


@pytest.mark.parametrize("case", OUTPUT_IN_THE_WAY)
def test_every_stage_checks_its_outputs_before_the_work(project, case):
    """Something in the way of an output stops the stage before it reads or trains: one line, nothing written."""
    where, kind, fragment = OUTPUT_IN_THE_WAY[case]
    write_tiny_processed(project.path / "data" / "processed")  # what train and evaluate would read
    blocker = project.path / where
    if kind == "folder":
        blocker.mkdir(parents=True)
    elif blocker.is_dir():
        for child in blocker.iterdir():
            child.unlink()
        blocker.rmdir()
        blocker.write_text("in the way")
    else:
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("in the way")
    project.set("data.source", "synthetic")
    before = files_under(project.path)
    line = error_line(project.run(case.split("-")[0]))
    assert fragment in line, line
    assert files_under(project.path) == before


def test_names_are_printed_as_one_line_of_text(project, tmp_path):
    """A newline or a terminal escape in a file's name reaches the terminal escaped, on the one error line."""
    assert printable("a\nb\x1b[31mc\u202ed\ttab") == "a\\nb\\x1b[31mc\\u202ed\\ttab"
    for name in ("new\nline.txt", "red\x1b[31mescape.txt", "bidi\u202efile.txt"):  # "is neither a zip, ..."
        (tmp_path / name).write_bytes(b"not an HDF5 file")
        result = project.fetch_local(tmp_path / name)
        line = error_line(result)
        assert printable(name) in line and "\x1b" not in result.stderr, line
        assert "\u202e" not in result.stderr


@pytest.mark.parametrize("path, fragment", [("a\x00b.zip", "it holds a NUL byte"), ("loop", "Too many levels")])
def test_a_path_that_cannot_be_looked_up_has_its_own_line(project, tmp_path, path, fragment):
    if path == "loop":
        os.symlink(tmp_path / "loop", tmp_path / "loop")
        path = str(tmp_path / "loop")
    line = error_line(project.fetch_local(path))
    assert "cannot be looked up" in line and fragment in line, line
    project.assert_nothing_fetched()


def test_a_file_whose_size_lies_is_copied_only_up_to_the_limit(project, tmp_path):
    """A link to /proc/self/pagemap says 0 bytes and reads on for terabytes: the copy stops at the limit."""
    folder = tmp_path / "copy"
    folder.mkdir()
    os.symlink("/proc/self/pagemap", folder / VECTORS_FILE)
    assert (folder / VECTORS_FILE).stat().st_size == 0
    result = project.fetch_local(folder, env={"MNIST3D_MAX_FILE_MB": "1"})
    line = error_line(result)
    assert f"{folder / VECTORS_FILE} goes on past the 1 MB limit on input files as it is copied" in line, line
    project.assert_nothing_fetched()


def gzip_bomb(path, inflated: int):
    """A vectors file whose X_test is one gzip chunk, declared 320 kB, whose stream inflates to `inflated` bytes."""
    write_tiny_vectors(path, train=4, test=10)
    with h5py.File(path, "a") as h5:
        del h5["X_test"]
        h5.create_dataset("X_test", shape=(10, 4096), dtype="f8", chunks=(10, 4096), compression="gzip")
        squeeze, block = zlib.compressobj(1), bytes(1 << 20)
        stream = b"".join(squeeze.compress(block) for _ in range(inflated >> 20)) + squeeze.flush()
        h5["X_test"].id.write_direct_chunk((0, 0), stream)
    return path


def test_a_compressed_chunk_never_inflates_past_its_size(project, tmp_path):
    """HDF5's gzip filter grows its buffer for as long as a stream goes on (512 MB here, any size from a stream long
    enough). The reader stops at the chunk's declared 320 kB and names the file, in a 3 GB address space."""
    path = gzip_bomb(tmp_path / "v.h5", 512 << 20)
    result = predict_cli(project.path, path, preexec_fn=limit_memory, timeout=120)
    line = error_line(result)
    assert f"{path} X_test: a compressed chunk is damaged" in line, line
    with pytest.raises(PipelineError, match="a compressed chunk is damaged"):
        read_vectors(gzip_bomb(tmp_path / VECTORS_FILE, 8 << 20))


def test_a_file_of_30000_tiny_clouds_is_refused_up_front(project, tmp_path):
    """30,000 groups: over the 20,000 point clouds a file may hold, refused before the groups are walked: in
    seconds, in a 3 GB address space; the line says how to raise the limit."""
    path = tmp_path / "many.h5"
    with h5py.File(path, "w", libver="latest") as h5:
        h5.create_group("0")["points"] = np.zeros((1, 3))
        shared = h5["0/points"]
        for index in range(1, 30_000):
            h5.create_group(str(index))["points"] = shared  # a hard link: 30,000 tiny clouds, fast to write
    start = time.monotonic()
    result = predict_cli(project.path, path, preexec_fn=limit_memory, timeout=60)
    assert time.monotonic() - start < 60
    line = error_line(result)
    assert "30,000 groups, more than the 20,000 point clouds one file may hold" in line, line
    assert "MNIST3D_MAX_CLOUDS" in line
