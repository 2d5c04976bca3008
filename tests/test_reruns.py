"""What DVC re-runs and restores: a killed train and `dvc checkout`, and the same data from another path."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import copy_repo, dvc, dvc_env

pytestmark = pytest.mark.slow

MODEL = "models/model.keras"


@pytest.fixture(scope="module")
def repo(baseline_repo, tmp_path_factory) -> Path:
    """Tiny synthetic params after one committed `dvc repro`; each test leaves it as it found it."""
    return copy_repo(baseline_repo, tmp_path_factory.mktemp("reruns") / "repo")


def committed_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def train_process(process: subprocess.Popen) -> psutil.Process | None:
    """The train stage's Python process, once `process` (DVC) has started it."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
        return next((child for child in children if "stages/train.py" in " ".join(child.cmdline())), None)
    except psutil.Error:  # a child that exited while it was being looked at
        return None


def test_killed_train_leaves_no_model_and_dvc_checkout_brings_back_the_committed_one(repo):
    """DVC deletes a stage's outputs before running it: after kill -9 the model is absent, not the previous one.

    `dvc checkout` restores the cached outputs that dvc.lock records, and git the uncached training curves,
    as docs/troubleshooting.md says.
    """
    lock_before = (repo / "dvc.lock").read_bytes()
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train"],
        cwd=repo,
        env=dvc_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: DVC and the train process it starts die together
    )
    try:
        deadline = time.monotonic() + 120
        # DVC removes the outputs, then rewrites .dvc/tmp/rwlock, then starts train. Killed in that rewrite, DVC
        # would leave the lock file empty, which is not the case under test: wait for the train process itself.
        outputs = [repo / MODEL, repo / "metrics/train.json"]
        while not (train := train_process(process)) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "train finished before it could be killed"
        assert train, "DVC never started train"
        assert not any(p.exists() for p in outputs), "DVC started train without removing the model and the metrics"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: DVC and the train process it started
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs([train], timeout=30)  # DVC's child too is gone, its last write done
    assert not alive and not (repo / MODEL).exists()
    assert (repo / "dvc.lock").read_bytes() == lock_before  # a killed stage is never recorded
    dvc(repo, "checkout")
    assert hashlib.md5((repo / MODEL).read_bytes()).hexdigest() == committed_md5(repo, "train", MODEL)
    # The metrics and training curves are `cache: false`: DVC has no copy of them, git has (committed with the run).
    assert "metrics/" in dvc(repo, "status").stdout
    subprocess.run(["git", "checkout", "HEAD", "--", "metrics"], cwd=repo, check=True, capture_output=True)
    status = json.loads(dvc(repo, "status", "--json").stdout)
    assert status == {}, (status, sorted(str(p.relative_to(repo)) for p in (repo / "metrics").rglob("*")))


def test_the_same_data_from_another_path_re_runs_nothing_after_fetch(repo, tmp_path):
    """data.path is in the manifest, not in data/raw: identical bytes from two folders leave train untouched."""
    folders = []
    for name in ("downloads", "elsewhere"):
        folder = tmp_path / name
        shutil.copytree(repo / "data" / "raw", folder)
        folders.append(folder)
    for folder in folders:
        result = dvc(repo, "exp", "run", "-S", "data.source=local", "-S", f"data.path={folder}")
        log = result.stdout + result.stderr
        assert "Running stage 'fetch'" in log, log
        for stage in ("preprocess", "train", "evaluate", "plot"):
            assert f"Stage '{stage}' didn't change, skipping" in log, log
        assert str(folder) in (repo / "data" / "manifest.json").read_text()
    dvc(repo, "exp", "run", "-S", "data.source=synthetic", "-S", "data.path=")  # back to the fixture's params
