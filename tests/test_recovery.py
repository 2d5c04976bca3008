"""`dvc repro` on a git + DVC copy of the project with tiny synthetic data: kill -9 in the middle of fetch, preprocess
and train, then recovery; byte-identical re-runs; `dvc checkout` after a kill."""

import contextlib
import hashlib
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
    assert_pipeline_complete,
    copy_repo,
    dvc,
    dvc_env,
    edit_params,
    files_under,
    git,
    temp_leftovers,
)

pytestmark = pytest.mark.slow
MODEL, SUMMARY = "models/model.keras", "metrics/train.json"


def wait_until(ready, process: subprocess.Popen, what: str, output=lambda: "", timeout: float = 120) -> None:
    """Poll `ready()`, the state of files or processes, while `process` runs; never a log line or a fixed time."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"exited before {what}:\n{output()}"
        assert time.monotonic() < deadline, f"not {what} in {timeout}s:\n{output()}"
        time.sleep(0.02)


class Watched:
    """A process in its own session whose output lines (stdout and stderr) are collected as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_until(self, ready, what: str) -> None:
        wait_until(ready, self.process, what, self.text)

    def stage_process(self, script: str) -> psutil.Process | None:
        """The Python process running `script` (or None), never the shell DVC runs it through: dash forks, not execs."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that ended while it was looked at
                if any(arg == script or arg.endswith(f"/{script}") for arg in child.cmdline()):
                    return child
        return None

    def finish(self) -> int:
        code = self.process.wait(timeout=120)
        self.reader.join(timeout=10)
        return code


WRITE = {"x86_64": "1", "aarch64": "64"}[platform.machine()]  # the number of write(2)


def blocked_writing_stdout(pid: int) -> bool:
    """Whether process `pid` waits inside write(2) on its stdout (Linux: /proc/PID/syscall names the call)."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return call[:2] == [WRITE, "0x1"]


def outputs(repo: Path, names=("data/raw", "data/processed", MODEL, "metrics/live", SUMMARY)) -> dict[str, bytes]:
    """The bytes of every file of these outputs, by path (an absent output has none)."""
    return {path: data for path, data in files_under(repo).items() if path.startswith(names)}


@pytest.fixture(scope="module")
def pipeline_repo(baseline_repo, tmp_path_factory) -> Path:
    """A copy of the baseline run (1 epoch, 40 + 10 digits); each test starts where the one before left it."""
    return copy_repo(baseline_repo, tmp_path_factory.mktemp("recovery") / "repo")


def test_sigkill_during_fetch_then_repro_fetches_the_same_bytes_and_runs_nothing_else(pipeline_repo):
    """`dvc repro` and its fetch are killed (kill -9 of the process group) while the digits render; then `dvc repro`
    fetches the same bytes again, so nothing after fetch has to re-run."""
    repo = pipeline_repo
    first = outputs(repo, ("data/raw",))
    # Without data/raw, dvc repro must run fetch; the rest of the pipeline is in place, as a previous run left it.
    shutil.rmtree(repo / "data" / "raw")
    previous, before = outputs(repo), set(os.listdir(repo / "data"))
    run = Watched([sys.executable, "-m", "dvc", "repro"], repo, dvc_env())
    # The train clouds are being written into fetch's temp folder; the vectors file, written last, is not there yet.
    run.wait_until(lambda: list((repo / "data").glob(".raw.*/train_point_clouds.h5")), "rendering the digits")
    os.killpg(run.process.pid, signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert "fetch: wrote" not in run.text(), "fetch finished before the kill; nothing was interrupted"
    assert outputs(repo) == previous  # data/raw still absent, everything else as it was
    leftovers = set(os.listdir(repo / "data")) - before
    assert all(name.startswith(".") for name in leftovers), leftovers  # temps only, never data/raw
    log = dvc(repo, "repro").stdout
    assert "Running stage 'fetch'" in log, log
    assert "Running stage 'preprocess'" not in log, log  # data/raw came back byte for byte
    assert_pipeline_complete(repo)
    assert temp_leftovers(repo) == [], "the killed fetch's temp folder was not cleaned up by the next run"
    assert outputs(repo, ("data/raw",)) == first


def test_sigkill_during_preprocess_keeps_the_previous_output_then_repro_recovers(pipeline_repo):
    """preprocess, run by hand, is killed after writing train.npz and before test.npz; a forced run writes the same
    bytes again (so nothing after it has to re-run) and removes the killed run's temp folder."""
    repo = pipeline_repo
    dvc(repo, "repro")  # a complete pipeline to start from (a no-op after a test that completed it)
    previous, processed = outputs(repo), outputs(repo, ("data/processed",))
    # Its stdout is a pipe that is already full: the stage blocks on its first line, "preprocess: train ...",
    # which it prints right after writing train.npz into its temp folder. So the kill lands mid-stage, every time.
    read_end, write_end = os.pipe()
    filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)  # its own, non-blocking, handle
    for size in (4096, 256, 16, 1):
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"x" * size)
    os.close(filler)
    process = subprocess.Popen(
        [sys.executable, "stages/preprocess.py"], cwd=repo, env=dvc_env(), stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    try:  # done with train.npz, it prints a line, and the pipe is full
        wait_until(lambda: blocked_writing_stdout(process.pid), process, "blocked on its first line", timeout=60)
        half = [p.name for p in next((repo / "data").glob(".processed.*")).iterdir()]
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        os.close(read_end)
        if process.poll() is None:
            process.kill()
    assert half == ["train.npz"], half  # it really was half-written
    assert outputs(repo) == previous, "an output changed although its stage was killed"
    log = dvc(repo, "repro", "--force", "--single-item", "preprocess")
    assert "Running stage 'preprocess'" in log.stdout, log.stdout
    assert_pipeline_complete(repo)
    assert outputs(repo, ("data/processed",)) == processed
    assert temp_leftovers(repo) == [], "the killed preprocess's temp folder was not cleaned up by the next run"


def test_sigkill_during_train_leaves_no_model_then_checkout_and_repro_recover(pipeline_repo):
    """The train process under `dvc repro` is killed (as the OOM killer would) after its first epoch. DVC deleted its
    outputs before running it: the model is absent, the curves and train.json the killed run's. `dvc checkout`
    restores the model and git the uncached metrics (docs/troubleshooting.md); a run with other params trains again."""
    repo = pipeline_repo
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "--allow-empty", "-qm", "the run before the kill")  # git holds the metrics DVC does not cache
    data, lock = outputs(repo, ("data/",)), (repo / "dvc.lock").read_text()
    committed_md5 = next(out["md5"] for out in yaml.safe_load(lock)["stages"]["train"]["outs"] if out["path"] == MODEL)
    # Far more epochs than the kill needs: a tiny epoch takes a fraction of a second, so with only a few left the
    # run could end between seeing an epoch done and the kill. With hundreds left the kill always lands mid-run.
    epochs = yaml.safe_load((repo / "params.yaml").read_text())["epochs"]
    edit_params(repo / "params.yaml", {"epochs": epochs + 300})
    run = Watched([sys.executable, "-m", "dvc", "repro"], repo, dvc_env())
    try:
        run.wait_until(lambda: run.stage_process("stages/train.py"), "train started")
        assert not (repo / MODEL).exists() and not (repo / SUMMARY).exists(), "train started beside the old outputs"
        # train rewrites train.json after every epoch: once it is back, an epoch is done.
        run.wait_until(lambda: (repo / SUMMARY).is_file(), "an epoch done")
        train = run.stage_process("stages/train.py")
        train.kill()
        assert run.finish() != 0, "dvc repro succeeded although train was killed"
        assert psutil.wait_procs([train], timeout=30)[1] == [], "train outlived its kill"
    finally:
        with contextlib.suppress(ProcessLookupError):  # dvc and anything it left behind, so nothing trains on
            os.killpg(run.process.pid, signal.SIGKILL)
    assert "train: saved" not in run.text(), "train finished before the kill; nothing was interrupted"
    assert not (repo / MODEL).exists(), "a model is in place although train was killed"
    assert outputs(repo, ("data/",)) == data
    # The curves and train.json are the killed run's, written up to its last epoch; dvc.lock records none of it.
    assert 1 <= json.loads((repo / SUMMARY).read_text())["epochs"] < epochs + 300
    curve = (repo / "metrics/live/plots/metrics/train/accuracy.tsv").read_text().splitlines()
    assert 1 <= len(curve) - 1 < epochs + 300, curve
    assert (repo / "dvc.lock").read_text() == lock, "dvc.lock recorded the killed run"
    git(repo, "checkout", "HEAD", "--", "params.yaml")
    dvc(repo, "checkout")
    assert hashlib.md5((repo / MODEL).read_bytes()).hexdigest() == committed_md5
    assert "metrics/" in dvc(repo, "status").stdout  # `cache: false`: DVC has no copy of them, git has
    git(repo, "checkout", "HEAD", "--", "metrics")
    status = dvc(repo, "status", "--json").stdout
    assert json.loads(status) == {}, (status, sorted(files_under(repo / "metrics")))
    edit_params(repo / "params.yaml", {"epochs": epochs + 2})  # a change, so train must run again, but a short one
    log = dvc(repo, "repro", "train")  # up to train: the stages after it would only re-score the new model
    assert "Running stage 'train'" in log.stdout, log.stdout
    assert (repo / MODEL).is_file() and json.loads((repo / SUMMARY).read_text())["epochs"] == epochs + 2
    assert temp_leftovers(repo) == [], "the killed train's temp files were not cleaned up by the next run"
