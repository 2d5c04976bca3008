"""End to end: dvc repro on tiny synthetic data, then experiments that re-run only what changed."""

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from tests.conftest import assert_no_secret, copy_repo, dvc, git, predict_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(baseline_repo, tmp_path_factory) -> Path:
    return copy_repo(baseline_repo, tmp_path_factory.mktemp("pipeline") / "repo")


def test_repro_runs_all_five_stages_and_writes_every_output(repo):
    for path in ["data/manifest.json", "data/processed/train.npz", "data/processed/test.npz", "models/model.keras"]:
        assert (repo / path).is_file(), path
    for plot in ["accuracy.png", "loss.png", "confusion.png"]:
        assert (repo / "plots" / plot).read_bytes().startswith(b"\x89PNG"), plot
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert evaluation["samples"] == 20
    assert set(evaluation) == {"accuracy", "accuracy_original", "accuracy_rotated", "macro_f1", "loss", "samples"}
    per_class = json.loads((repo / "metrics/per_class.json").read_text())
    assert sum(row["samples"] for row in per_class) == 20 and set(per_class[0]) == {"digit", "accuracy", "samples"}
    confusion = json.loads((repo / "metrics/confusion.json").read_text())
    assert len(confusion) == 20 and set(confusion[0]) == {"actual", "predicted"}
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["epochs"] == 1 and train["augment"] == "clouds"
    assert set(train["validation"]) == {"accuracy", "accuracy_original", "accuracy_rotated"}
    manifest = json.loads((repo / "data/manifest.json").read_text())
    assert manifest["source"] == "synthetic" and manifest["rows"] == {"train": 80, "test": 20}


def test_kaggle_key_appears_nowhere_after_a_whole_dvc_repro(baseline_repo):
    """The baseline's repro ran every stage with a Kaggle key in its environment and in KAGGLE_CONFIG_DIR (see
    reproduced_repo); grep every output, the lock, DVC's cache and the log. A download from the fake Kaggle server
    with the same key is grepped the same way in test_fetch."""
    log = (baseline_repo.parent / "repro.log").read_text()
    for stage in ("fetch", "preprocess", "train", "evaluate", "plot"):
        assert f"Running stage '{stage}'" in log, log
    names = assert_no_secret(baseline_repo, log)
    assert {"dvc.lock", "params.yaml", "data/manifest.json", "models/model.keras", "metrics/train.json"} <= names
    assert any(".dvc/cache" in name for name in names)  # DVC's cache is scanned too


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
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    assert workspace["metrics"]["metrics/evaluate.json"]["data"] == evaluation


def test_model_is_a_registered_artifact_that_dvc_artifacts_get_fetches(repo, tmp_path):
    """After `gto register`, `dvc artifacts get` fetches the model committed at HEAD (from the local cache)."""
    gto = Path(sys.executable).parent / "gto"  # GTO, the model registry's CLI, comes with DVC
    subprocess.run(
        [str(gto), "register", "conv3d-classifier", "--version", "v1.0.0"], cwd=repo, check=True, capture_output=True
    )
    lock = yaml.safe_load(git(repo, "show", "HEAD:dvc.lock"))
    committed = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.keras")
    target = tmp_path / "fetched.keras"
    dvc(repo, "artifacts", "get", str(repo), "conv3d-classifier", "-o", str(target))
    assert hashlib.md5(target.read_bytes()).hexdigest() == committed


def test_predict_scores_the_test_split_exactly_as_evaluate_does(repo, tmp_path):
    """The same model and data through both doors: the same prediction for every row, so the same accuracy."""
    result = predict_cli(repo, "data/raw/full_dataset_vectors.h5", "--csv", tmp_path / "p.csv")  # its own mnist3d
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "p.csv", newline="") as handle:
        predicted = [int(row["predicted"]) for row in csv.DictReader(handle)]
    assert predicted == [row["predicted"] for row in json.loads((repo / "metrics/confusion.json").read_text())]
    accuracy = json.loads((repo / "metrics/evaluate.json").read_text())["accuracy"]
    assert f"accuracy {accuracy:.4f} ({round(accuracy * 20)} of 20 correct)" in result.stdout, result.stdout


def test_predict_follows_the_model_not_todays_params(repo, tmp_path):
    """A model trained with another colormap and 4 views: predict agrees row by row with evaluate, even after
    params.yaml goes back to Oranges and 1 view, and its header says that the file and the model disagree."""
    dvc(repo, "exp", "run", "-S", "preprocess.colormap=viridis", "-S", "evaluate.tta_views=4")
    trained = (repo / "params.yaml").read_text()
    params = yaml.safe_load(trained)
    params["preprocess"]["colormap"], params["evaluate"]["tta_views"] = "Oranges", 1
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = predict_cli(repo, "data/raw/full_dataset_vectors.h5", "--csv", tmp_path / "p.csv")
    finally:
        (repo / "params.yaml").write_text(trained)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert (
        "(colormap viridis, align axes, 4 view(s); params.yaml has colormap Oranges, tta_views 1, but the model's"
        in header
    )
    with open(tmp_path / "p.csv", newline="") as handle:
        predicted = [int(row["predicted"]) for row in csv.DictReader(handle)]
    assert predicted == [row["predicted"] for row in json.loads((repo / "metrics/confusion.json").read_text())]


def test_editing_the_modules_only_predict_imports_re_runs_no_stage(repo):
    modules = [repo / "mnist3d" / name for name in ("io/formats.py", "io/ply.py", "evaluate/predict.py", "__main__.py")]
    originals = [path.read_text() for path in modules]
    try:
        for path, text in zip(modules, originals, strict=True):
            path.write_text(text + "\n# an edit\n")
        status = dvc(repo, "status", "--json")
        assert json.loads(status.stdout) == {}, status.stdout
    finally:
        for path, text in zip(modules, originals, strict=True):
            path.write_text(text)


def test_the_same_data_from_another_path_re_runs_nothing_after_fetch(repo, tmp_path):
    """data.path is in the manifest, not in data/raw: identical bytes from two folders leave train untouched."""
    for name in ("downloads", "elsewhere"):
        folder = shutil.copytree(repo / "data" / "raw", tmp_path / name)
        result = dvc(repo, "exp", "run", "-S", "data.source=local", "-S", f"data.path={folder}")
        log = result.stdout + result.stderr
        assert "Running stage 'fetch'" in log, log
        for stage in ("preprocess", "train", "evaluate", "plot"):
            assert f"Stage '{stage}' didn't change, skipping" in log, log
        assert str(folder) in (repo / "data" / "manifest.json").read_text()


def test_params_no_stage_reads_re_run_nothing(repo):
    """Stages depend on the keys they read: another architecture preset than `model`, or data.timeout (how long to
    wait for Kaggle, not what comes), leave every stage as it was."""
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    assert params["model"] != "seed"
    params["architectures"]["seed"]["dropout"] = 0.3
    params["data"]["timeout"] = 5
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        status = dvc(repo, "status", "--json")
        assert json.loads(status.stdout) == {}, status.stdout
        params["architectures"][params["model"]]["dropout"] = 0.3  # the selected preset does re-run train
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert set(json.loads(dvc(repo, "status", "--json").stdout)) == {"train"}  # and after it, what reads it
    finally:
        (repo / "params.yaml").write_text(original)


def test_other_bytes_at_the_same_local_path_are_fetched_again(repo, tmp_path):
    """With data.source local, DVC hashes what data.path names: a new copy at the same path re-runs fetch."""
    folder = shutil.copytree(repo / "data" / "raw", tmp_path / "copy")
    dvc(repo, "exp", "run", "-S", "data.source=local", "-S", f"data.path={folder}", "fetch")
    assert json.loads(dvc(repo, "status", "--json", "fetch").stdout) == {}
    vectors = folder / "full_dataset_vectors.h5"
    before = hashlib.sha256(vectors.read_bytes()).hexdigest()
    with h5py.File(vectors, "a") as h5:  # the same schema, other values: what a newer download would be
        h5["X_test"][0] = h5["X_test"][1]
    status = json.loads(dvc(repo, "status", "--json", "fetch").stdout)
    assert "fetch" in status and str(folder) in json.dumps(status["fetch"]), status
    log = dvc(repo, "repro", "fetch").stdout
    assert "Running stage 'fetch'" in log, log
    manifest = json.loads((repo / "data" / "manifest.json").read_text())
    assert manifest["files"]["full_dataset_vectors.h5"]["sha256"] != before
    assert json.loads(dvc(repo, "status", "--json", "fetch").stdout) == {}
