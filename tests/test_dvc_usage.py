"""The README's DVC recipes on a tiny synthetic copy: push and pull through a local remote, and a queued sweep."""

import hashlib
import json
import shutil
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import copy_repo, dvc, files_under, git

pytestmark = pytest.mark.slow
CACHED_OUTPUTS = ("data/raw", "data/processed", "models/model.keras", "plots")  # what dvc push/pull carries
SWEEP = {"lr-0.001": 0.001, "lr-0.004": 0.004}  # experiment name: train.learning_rate (the workspace has 0.002)
QUEUE_TIMEOUT = 300  # seconds for both queued experiments together


def checksums(repo: Path) -> dict[str, str]:
    cached = files_under(repo).items()
    return {name: hashlib.sha256(data).hexdigest() for name, data in cached if name.startswith(CACHED_OUTPUTS)}


@pytest.fixture(scope="module")
def repo(baseline_repo, tmp_path_factory) -> Path:
    repo = copy_repo(baseline_repo, tmp_path_factory.mktemp("usage") / "repo")
    yield repo
    dvc(repo, "queue", "stop", check=False)  # no worker outlives the test


def finished_experiments(repo: Path) -> set[str]:
    """Names of the experiments that completed: each leaves a git ref, refs/exps/.../NAME."""
    return {ref.rsplit("/", 1)[-1] for ref in git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()}


def queue_workers(repo: Path) -> list[psutil.Process]:
    """The processes of `dvc exp queue-worker` running for `repo`."""
    workers = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline, cwd = process.info["cmdline"] or [], process.info["cwd"] or ""
        if "queue-worker" in cmdline and Path(cwd).is_relative_to(repo):
            workers.append(process)
    return workers


def test_push_then_pull_into_an_empty_cache_restores_identical_outputs(repo, tmp_path_factory):
    remote = tmp_path_factory.mktemp("remote")
    dvc(repo, "remote", "add", "-d", "local", str(remote))
    git(repo, "commit", "-qam", "local remote")
    before = checksums(repo)
    assert {"data/raw/full_dataset_vectors.h5", "models/model.keras", "plots/confusion.png"} <= set(before)
    dvc(repo, "push")
    assert any(p.is_file() for p in remote.rglob("*")), "dvc push stored nothing in the remote"
    shutil.rmtree(repo / ".dvc/cache")
    for name in CACHED_OUTPUTS:
        path = repo / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not (repo / "models/model.keras").exists()
    dvc(repo, "pull")
    assert checksums(repo) == before
    status = dvc(repo, "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def test_queued_sweep_on_two_workers_puts_both_experiments_metrics_in_exp_show(repo):
    workspace_params = (repo / "params.yaml").read_text()
    for name, rate in SWEEP.items():
        # train alone (and what it needs), as benchmarks/sweep.py queues a recipe search
        dvc(repo, "exp", "run", "--queue", "-n", name, "-S", f"train.learning_rate={rate}", "train")
    dvc(repo, "queue", "start", "-j", "2")
    # Wait on git refs and the process table, not on `dvc queue status`: each look at that costs a second of CPU.
    deadline, seen_workers = time.monotonic() + QUEUE_TIMEOUT, False
    while not set(SWEEP) <= finished_experiments(repo):
        workers = queue_workers(repo)
        if seen_workers and not workers:  # gone with an experiment unfinished: it failed
            break
        seen_workers |= bool(workers)
        assert time.monotonic() < deadline, f"the queue did not finish in {QUEUE_TIMEOUT} s"
        time.sleep(0.2)  # between two looks at the refs and the processes
    while True:  # the queue records a task's end just after its ref appears
        status = dvc(repo, "queue", "status").stdout
        # rows read: task id, name, created (time), status
        table = [line.split() for line in status.splitlines()]
        rows = {words[1]: words[-1] for words in table if len(words) > 1 and words[1] in SWEEP}
        if all(rows.get(name) in ("Success", "Failed") for name in SWEEP):
            break
        assert time.monotonic() < deadline, f"the queue did not finish in {QUEUE_TIMEOUT} s:\n{status}"
    failed = {
        name: dvc(repo, "queue", "logs", name, check=False).stdout[-2000:]
        for name in SWEEP
        if rows.get(name) != "Success"
    }
    assert not failed, f"queued experiments failed:\n{status}\n{failed}"
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                if rev["name"] in SWEEP:
                    found[rev["name"]] = rev["data"]
    assert set(found) == set(SWEEP), f"exp show lists {sorted(found)}"
    for name, data in found.items():
        assert data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == SWEEP[name]
        assert data["metrics"]["metrics/train.json"]["data"]["epochs"] == 1
    # each rate reached its own training run: three rates, three different sets of training figures
    trained = [found[name]["metrics"]["metrics/train.json"]["data"] for name in SWEEP]
    assert json.loads((repo / "metrics/train.json").read_text()) not in trained and trained[0] != trained[1]
    # the workspace is untouched: queued runs happen in temporary clones
    assert (repo / "params.yaml").read_text() == workspace_params
