"""`dvc repro` on git + DVC copies of the project with tiny synthetic data: kill -9 in the middle of fetch,
preprocess and train, then recovery; byte-identical forced re-runs; and the Kaggle key found nowhere."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import (
    SECRET,
    clean_env,
    dvc,
    dvc_env,
    edit_params,
    files_under,
    make_dvc_repo,
    reproduced_repo,
    set_param,
    temp_leftovers,
    tiny_model,
    tiny_zip_bytes,
)
from tests.fake_kaggle import FakeKaggle, write_kaggle_json

pytestmark = pytest.mark.slow


def entries(folder: Path) -> set[str]:
    """The names in `folder` (none if it does not exist)."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def tiny_params(**overrides):
    """A change_params for make_dvc_repo: the tiny model, batches of 32, and `overrides` (`data__source=...`)."""

    def change(params: dict) -> None:
        tiny_model(params)
        params["train"]["batch_size"] = 32
        for dotted, value in overrides.items():
            set_param(params, dotted.replace("__", "."), value)

    return change


# --- SIGKILL mid-stage, recovery by dvc repro, determinism ------------------------------------------------------------


class Watched:
    """A process in its own session whose stdout and stderr lines are collected as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.readers = [
            threading.Thread(target=self._read, args=(getattr(self.process, name), self.lines[name]), daemon=True)
            for name in self.lines
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def text(self, name: str = "both") -> str:
        return "".join(self.lines["stdout"] + self.lines["stderr"] if name == "both" else self.lines[name])

    def wait_until(self, ready, what: str, timeout: float = 120) -> None:
        """Poll `ready()`, the state of files or processes, while the process runs; never a log line or a fixed time."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"exited before {what}:\n{self.text()}"
            assert time.monotonic() < deadline, f"not {what} in {timeout}s:\n{self.text()}"
            time.sleep(0.02)

    def stage_process(self, script: str) -> psutil.Process | None:
        """The Python process running `script`, never the shell around it (None while there is none).

        DVC runs each command through $SHELL or /bin/sh; dash forks rather than execs, and its own command line
        (`sh -c "python stages/train.py"`) ends with the script too. Killing that shell would orphan the stage.
        """
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that ended while it was looked at
                if any(arg == script or arg.endswith(f"/{script}") for arg in child.cmdline()):
                    return child
        return None

    def finish(self) -> int:
        code = self.process.wait(timeout=120)
        for reader in self.readers:
            reader.join(timeout=10)
        return code


WRITE = {"x86_64": "1", "aarch64": "64"}[platform.machine()]  # the number of write(2)


def blocked_writing_stdout(pid: int) -> bool:
    """Whether process `pid` waits inside write(2) on its stdout (Linux: /proc/PID/syscall names the call)."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return call[:2] == [WRITE, "0x1"]


def outputs(repo: Path) -> dict[str, dict[str, bytes] | None]:
    """The final output paths as file trees (None where absent)."""
    trees = {}
    for name in ("data/raw", "data/processed", "models/model.keras", "metrics/live", "metrics/train.json"):
        path = repo / name
        trees[name] = None if not path.exists() else {"": path.read_bytes()} if path.is_file() else files_under(path)
    return trees


def assert_outputs_absent_or_previous(repo: Path, previous: dict) -> None:
    for name, tree in outputs(repo).items():
        assert tree is None or tree == previous[name], f"{name} changed although its stage was killed"


def assert_pipeline_complete(repo: Path) -> None:
    """Every output is in place, agrees with its manifest, and DVC sees nothing left to do."""
    raw = repo / "data" / "raw"
    manifest = json.loads((repo / "data" / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        assert (raw / name).stat().st_size == info["bytes"], name
    for name in ("data/processed/train.npz", "data/processed/test.npz", "models/model.keras"):
        assert (repo / name).is_file(), name
    for name in ("train", "evaluate"):
        assert json.loads((repo / "metrics" / f"{name}.json").read_text())
    for plot in ("accuracy", "loss", "confusion"):
        assert (repo / "plots" / f"{plot}.png").read_bytes().startswith(b"\x89PNG"), plot
    status = dvc(repo, "status", "--json")
    assert json.loads(status.stdout) == {}, status.stdout


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory) -> Path:
    """After one committed `dvc repro`: tiny synthetic data (fetch takes a few seconds), a tiny model and enough
    epochs to kill one mid-way. Each test starts from wherever the one before left it."""
    params = tiny_params(
        epochs=6, data__source="synthetic", data__synthetic_train_digits=60, data__synthetic_test_digits=40
    )
    return reproduced_repo(tmp_path_factory.mktemp("recovery"), params)


def test_sigkill_during_fetch_then_repro_recovers(pipeline_repo):
    """`dvc repro` and its fetch are killed (kill -9 of the process group) while the digits render."""
    repo = pipeline_repo
    # Without data/raw, dvc repro must run fetch; the rest of the pipeline is in place, as a previous run left it.
    shutil.rmtree(repo / "data" / "raw", ignore_errors=True)
    previous, before = outputs(repo), entries(repo / "data")
    run = Watched([sys.executable, "-m", "dvc", "repro"], repo, dvc_env())
    # The train clouds are being written into fetch's temp folder; the vectors file, written last, is not there yet.
    run.wait_until(lambda: list((repo / "data").glob(".raw.*/train_point_clouds.h5")), "rendering the digits")
    os.killpg(run.process.pid, signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert "fetch: wrote" not in run.text(), "fetch finished before the kill; nothing was interrupted"
    assert outputs(repo) == previous  # data/raw still absent, everything else as it was
    leftovers = entries(repo / "data") - before
    assert all(name.startswith(".") for name in leftovers), leftovers  # temps only, never data/raw

    log = dvc(repo, "repro").stdout
    assert "Running stage 'fetch'" in log and "Stage 'preprocess' didn't change, skipping" in log, log  # same data
    assert_pipeline_complete(repo)
    assert temp_leftovers(repo) == [], "the killed fetch's temp folder was not cleaned up by the next run"


def test_sigkill_during_preprocess_keeps_the_previous_output_then_repro_recovers(pipeline_repo):
    """preprocess, run by hand after a params change, is killed after writing train.npz and before test.npz."""
    repo = pipeline_repo
    dvc(repo, "repro")  # a complete pipeline to start from (a no-op after a test that completed it)
    previous = outputs(repo)
    edit_params(repo / "params.yaml", {"preprocess.colormap": "viridis"})

    # Its stdout is a pipe that is already full: the stage blocks on its first line, "preprocess: train ...",
    # which it prints right after writing train.npz into its temp folder. So the kill lands mid-stage, every time.
    read_end, write_end = os.pipe()
    filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)  # its own, non-blocking, handle
    for size in (4096, 256, 16, 1):
        try:
            while True:
                os.write(filler, b"x" * size)
        except BlockingIOError:
            pass
    os.close(filler)
    env = clean_env({"PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen(
        [sys.executable, "stages/preprocess.py"], cwd=repo, env=env, stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while not blocked_writing_stdout(process.pid):  # done with train.npz, it prints a line, and the pipe is full
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "preprocess never blocked on its first line"
            time.sleep(0.02)
        half = [p.name for p in next((repo / "data").glob(".processed.*")).iterdir()]
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        os.close(read_end)
        if process.poll() is None:
            process.kill()
    assert half == ["train.npz"], half  # it really was half-written
    assert_outputs_absent_or_previous(repo, previous)
    assert outputs(repo)["data/processed"] == previous["data/processed"]

    log = dvc(repo, "repro")
    assert "Running stage 'preprocess'" in log.stdout, log.stdout
    assert_pipeline_complete(repo)
    assert outputs(repo)["data/processed"] != previous["data/processed"]  # viridis now
    assert temp_leftovers(repo) == [], "the killed preprocess's temp folder was not cleaned up by the next run"


def test_sigkill_during_train_keeps_no_partial_model_then_repro_recovers(pipeline_repo):
    """The train process under `dvc repro` is killed (as the OOM killer would) after its first epoch.

    The model is written whole or not at all; the curves and train.json, written every epoch, are left partial."""
    repo = pipeline_repo
    dvc(repo, "repro")
    previous, lock = outputs(repo), (repo / "dvc.lock").read_text()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # Far more epochs than the kill needs: a tiny epoch takes a fraction of a second, so with only a few left the
    # run could end between seeing "Epoch 2" and the kill. With hundreds left the kill always lands mid-run.
    previous_epochs = params["epochs"]
    params["epochs"] = previous_epochs + 300
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run = Watched([sys.executable, "-m", "dvc", "repro"], repo, dvc_env())
    try:
        # DVC removes train.json before it starts train, which rewrites it after every epoch: once train runs and
        # the file is back, an epoch is done.
        summary = repo / "metrics" / "train.json"
        run.wait_until(lambda: run.stage_process("stages/train.py") and summary.is_file(), "an epoch done")
        train = run.stage_process("stages/train.py")
        train.kill()
        assert run.finish() != 0, "dvc repro succeeded although train was killed"
        assert not train.is_running(), "train outlived its kill"
    finally:
        with contextlib.suppress(ProcessLookupError):  # dvc and anything it left behind, so nothing trains on
            os.killpg(run.process.pid, signal.SIGKILL)
    assert "train: saved" not in run.text(), "train finished before the kill; nothing was interrupted"
    after = outputs(repo)
    for name in ("data/raw", "data/processed", "models/model.keras"):
        assert after[name] is None or after[name] == previous[name], f"{name} changed although train was killed"
    # The curves and train.json are the killed run's, written up to its last epoch: DVC deleted the previous ones
    # before running train and records none of these in dvc.lock.
    logged = json.loads((repo / "metrics" / "train.json").read_text())["epochs"]
    assert 1 <= logged < params["epochs"], logged
    curve = (repo / "metrics" / "live" / "plots" / "metrics" / "train" / "accuracy.tsv").read_text().splitlines()
    assert 1 <= len(curve) - 1 < params["epochs"], curve
    assert (repo / "dvc.lock").read_text() == lock, "dvc.lock recorded the killed run"

    params["epochs"] = previous_epochs + 2  # still a change, so train must run again, but a short one
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = dvc(repo, "repro")
    assert "Running stage 'train'" in log.stdout, log.stdout
    assert_pipeline_complete(repo)
    assert json.loads((repo / "metrics" / "train.json").read_text())["epochs"] == params["epochs"]
    assert temp_leftovers(repo) == [], "the killed train's temp files were not cleaned up by the next run"


def test_forced_repro_gives_byte_identical_metrics(pipeline_repo):
    """Two runs of the whole pipeline on the same params give the same bytes of metrics (and data)."""
    repo = pipeline_repo
    dvc(repo, "repro")
    first = {name: (repo / name).read_bytes() for name in ("metrics/train.json", "metrics/evaluate.json")}
    first_raw = files_under(repo / "data" / "raw")
    log = dvc(repo, "repro", "--force")
    for stage in ("fetch", "preprocess", "train", "evaluate", "plot"):
        assert f"Running stage '{stage}'" in log.stdout, log.stdout
    second = {name: (repo / name).read_bytes() for name in first}
    assert second == first
    assert files_under(repo / "data" / "raw") == first_raw


# --- the Kaggle key never leaks - ---------------------------------------------------------------------------------


def test_kaggle_key_appears_nowhere_after_a_whole_dvc_repro(tmp_path):
    """Fetch from the fake Kaggle with a planted key, then every stage; grep every output, the lock and the log."""
    repo = make_dvc_repo(tmp_path / "repo", tiny_params(epochs=1, data__source="kaggle", train__augment="cube"))
    config = tmp_path / "kaggle-config"
    write_kaggle_json(config)
    home = tmp_path / "home"
    home.mkdir()
    with FakeKaggle(tiny_zip_bytes(tmp_path)) as fake:
        # The key is also in the environment of every stage, which is where a careless dump would find it.
        env = {**fake.env(config), "HOME": str(home), "KAGGLE_USERNAME": "tester", "KAGGLE_KEY": SECRET}
        result = dvc(repo, "repro", env=env)
    assert any(r["path"] == fake.blob_path for r in fake.requests), "the zip was never downloaded from the fake"
    assert_pipeline_complete(repo)
    assert SECRET not in result.stdout + result.stderr
    scanned = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts[len(repo.parts) :][:1]]
    names = {str(p.relative_to(repo)) for p in scanned}
    assert {"dvc.lock", "params.yaml", "data/manifest.json", "models/model.keras", "metrics/train.json"} <= names
    assert any(".dvc/cache" in name for name in names)  # DVC's cache is scanned too
    for path in scanned:
        assert SECRET.encode() not in path.read_bytes(), path
