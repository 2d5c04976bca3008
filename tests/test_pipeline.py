"""End to end: dvc repro on tiny synthetic data, then an experiment that re-runs only what changed."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_repo, dvc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(baseline_repo, tmp_path_factory) -> Path:
    """A copy of the project with tiny synthetic params, committed after one dvc repro."""
    return copy_repo(baseline_repo, tmp_path_factory.mktemp("pipeline") / "repo")


def test_repro_runs_all_five_stages_and_writes_every_output(repo):
    for path in ["data/manifest.json", "data/processed/train.npz", "data/processed/test.npz", "models/model.keras"]:
        assert (repo / path).is_file(), path
    for plot in ["accuracy.png", "loss.png", "confusion.png"]:
        assert (repo / "plots" / plot).read_bytes().startswith(b"\x89PNG"), plot
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert evaluation["samples"] == 20 and 0.0 <= evaluation["accuracy"] <= 1.0
    assert set(evaluation) == {"accuracy", "accuracy_original", "accuracy_rotated", "macro_f1", "loss", "samples"}
    per_class = json.loads((repo / "metrics/per_class.json").read_text())
    assert sum(row["samples"] for row in per_class) == 20 and set(per_class[0]) == {"digit", "accuracy", "samples"}
    confusion = json.loads((repo / "metrics/confusion.json").read_text())
    assert len(confusion) == 20 and set(confusion[0]) == {"actual", "predicted"}
    assert json.loads((repo / "metrics/train.json").read_text())["epochs"] == 1
    manifest = json.loads((repo / "data/manifest.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["rows"] == {"train": 80, "test": 20}


def test_exp_run_with_more_epochs_skips_fetch_and_preprocess_and_metrics_diff_sees_it(repo):
    result = dvc(repo, "exp", "run", "-S", "epochs=2")
    log = result.stdout + result.stderr
    assert "'fetch' didn't change, skipping" in log
    assert "'preprocess' didn't change, skipping" in log
    for stage in ("train", "evaluate", "plot"):
        assert f"Running stage '{stage}'" in log
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["epochs"] == 2
    history = (repo / "metrics/live/plots/metrics/train/accuracy.tsv").read_text().strip().splitlines()
    assert len(history) == 1 + 2  # header and one row per epoch
    diff = json.loads(dvc(repo, "metrics", "diff", "--json").stdout)
    assert diff["metrics/train.json"]["epochs"] == {"old": 1, "new": 2, "diff": 1}
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    workspace = next(row["data"] for row in shown if row["rev"] == "workspace")
    assert workspace["params"]["params.yaml"]["data"]["epochs"] == 2
    # the columns dvc exp show lists: the two metrics files, with no per-class figures among them
    assert sorted(workspace["metrics"]) == ["metrics/evaluate.json", "metrics/train.json"]
    assert workspace["metrics"]["metrics/evaluate.json"]["data"] == json.loads(
        (repo / "metrics/evaluate.json").read_text()
    )


def test_model_is_a_registered_artifact_that_dvc_artifacts_get_fetches(repo, tmp_path):
    """After `gto register`, `dvc artifacts get` fetches the model committed at HEAD (from the local cache)."""
    gto = Path(sys.executable).parent / "gto"  # GTO, the model registry's CLI, comes with DVC
    subprocess.run(
        [str(gto), "register", "conv3d-classifier", "--version", "v1.0.0"], cwd=repo, check=True, capture_output=True
    )
    lock = yaml.safe_load(
        subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=repo, capture_output=True, text=True).stdout
    )
    committed = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.keras")
    target = tmp_path / "fetched.keras"
    dvc(repo, "artifacts", "get", str(repo), "conv3d-classifier", "-o", str(target))
    assert hashlib.md5(target.read_bytes()).hexdigest() == committed
