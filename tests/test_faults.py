"""The promise of issue 4, case by case: a stage either writes complete outputs, or exits 1 with one
`error: ` line that names the problem and the fix, no traceback, and nothing half-written.

Bad params, missing inputs and damaged model files are run as the real stage scripts in a scratch
project. Interruptions (SIGKILL), recovery, determinism and the Kaggle key are run through `dvc repro`
in git + DVC copies of the project with tiny synthetic data (marked slow).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from mnist3d.vectors import write_processed
from tests.conftest import (
    DELETE,
    SECRET,
    TINY_ARCHITECTURE,
    clean_env,
    dvc,
    dvc_env,
    edit_params,
    error_line,
    make_dvc_repo,
    set_param,
    tiny_zip_bytes,
)
from tests.fake_kaggle import FakeKaggle, write_kaggle_json

OUTPUT_DIRS = ("data", "models", "metrics", "plots")


# --- helpers ---------------------------------------------------------------------------------------------------------


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (relative path -> bytes), skipping bytecode caches."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def entries(folder: Path) -> set[str]:
    """The names in `folder` (none if it does not exist)."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def temp_leftovers(folder: Path) -> list[str]:
    """Dot-named temporaries (`.<name>.*.tmp*`) anywhere under the output folders of `folder`."""
    found = []
    for name in OUTPUT_DIRS:
        if (folder / name).is_dir():
            found += [str(p.relative_to(folder)) for p in (folder / name).rglob(".*.tmp*")]
    return sorted(found)


def tiny_processed(folder: Path, rows: int = 6, channels: int = 3, seed: int = 0) -> None:
    """data/processed/{train,test}.npz in the stage schema, random but valid."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        write_processed(
            folder / f"{name}.npz", rng.random((rows, 16, 16, 16, channels), dtype=np.float32), np.arange(rows) % 10
        )


def run_tracing_imports(project, stage: str, env: dict[str, str] | None = None):
    """Run a stage with -X importtime; returns the result with those lines removed, and the modules it imported."""
    result = project.run(stage, env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    lines = result.stderr.splitlines(keepends=True)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    result.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return result, imported


# --- 1. params: all of them checked when any stage starts --------------------------------------------------------------

# Which values and keys are refused, and with which words, is tested in-process in test_params.py. These cases run
# the real stage scripts for what only a process shows: exit 1, one line, nothing written and TensorFlow never
# imported, also when the bad param belongs to a later stage.
PARAM_CASES = [
    # stage, key, bad value, fragments the error line must hold
    ("preprocess", "evaluate.tta_views", 25, ["evaluate.tta_views", "at most 24"]),  # a later stage's param
    ("train", "train.seed", DELETE, ["train.seed is missing"]),
    ("evaluate", "model", "resnet", ["model 'resnet'", "compact", "seed"]),
]


@pytest.mark.parametrize(
    "stage, key, value, fragments",
    PARAM_CASES,
    ids=[f"{stage}-{key}={'deleted' if value is DELETE else value}" for stage, key, value, _ in PARAM_CASES],
)
def test_bad_param_stops_its_stage_with_one_line_before_tensorflow(project, stage, key, value, fragments):
    """A bad value, an unknown preset or a missing key: exit 1, one line naming the key, nothing written, no TF."""
    project.set(key, value)
    result, imported = run_tracing_imports(project, stage)
    line = error_line(result)
    assert line.startswith("error: params.yaml: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert sorted(files_under(project.path)) == ["params.yaml"]  # nothing written, not even a temp
    assert not imported & {"tensorflow", "keras"}, f"{stage} imported TensorFlow before checking its params"


def test_broken_params_yaml_is_named_with_its_line(project):
    (project.path / "params.yaml").write_text("epochs: 3\ntrain: [unclosed\n")
    line = error_line(project.run("train"))
    assert line.startswith("error: params.yaml is not valid YAML at line "), line
    assert sorted(files_under(project.path)) == ["params.yaml"]


def test_validation_split_that_leaves_no_training_pairs_is_named(project):
    """0.9 passes the params check, but 6 rows are 3 pairs and 0.9 of them holds out all 3."""
    project.set("train.validation_split", 0.9)
    tiny_processed(project.path / "data" / "processed")
    line = error_line(project.run("train"))
    assert "train.validation_split" in line, line
    assert not (project.path / "models").exists() and not (project.path / "metrics").exists()


# --- 6. missing inputs: one line naming the command that makes them ----------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "missing", "fix"),
    [
        ("preprocess", "data/raw/full_dataset_vectors.h5", "dvc repro fetch"),
        ("train", "data/processed/train.npz", "dvc repro preprocess"),
    ],
)
def test_a_stage_without_its_input_says_which_stage_makes_it(project, stage, missing, fix):
    result, imported = run_tracing_imports(project, stage)
    line = error_line(result)
    assert f"{missing} not found" in line and fix in line, line
    assert sorted(files_under(project.path)) == ["params.yaml"]
    assert not imported & {"tensorflow", "keras"}


def test_evaluate_without_a_model_says_run_train(project):
    tiny_processed(project.path / "data" / "processed")
    before = files_under(project.path)
    result, imported = run_tracing_imports(project, "evaluate")
    line = error_line(result)
    assert "models/model.keras not found" in line and "dvc repro train" in line, line
    assert files_under(project.path) == before
    assert not (project.path / "metrics").exists()
    assert not imported & {"tensorflow", "keras"}, "evaluate imported TensorFlow before finding the model missing"


def test_evaluate_without_test_data_says_run_preprocess(project):
    line = error_line(project.run("evaluate"))
    assert "data/processed/test.npz not found" in line and "dvc repro preprocess" in line, line
    assert sorted(files_under(project.path)) == ["params.yaml"]


def test_plot_without_metrics_says_run_evaluate(project):
    line = error_line(project.run("plot"))
    assert "metrics/confusion.json" in line and "dvc repro evaluate" in line, line
    assert sorted(files_under(project.path)) == ["params.yaml"]
    assert sorted(p.name for p in project.path.iterdir()) == ["params.yaml"]  # no .plots temp folder either


def test_plot_without_training_curves_says_run_train(project):
    confusion = project.path / "metrics" / "confusion.json"
    confusion.parent.mkdir()
    confusion.write_text(json.dumps([{"actual": 1, "predicted": 1}, {"actual": 2, "predicted": 1}]))
    before = files_under(project.path)
    line = error_line(project.run("plot"))
    assert "metrics/live" in line and "dvc repro train" in line, line
    assert files_under(project.path) == before
    assert not (project.path / "plots").exists() and temp_leftovers(project.path) == []
    assert sorted(p.name for p in project.path.iterdir()) == ["metrics", "params.yaml"]


# --- 4. the model file: damaged, tampered, unsafe -------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Real .keras files: a valid tiny model, one with a Lambda layer, and one that expects 6 channels."""
    import keras

    from mnist3d.model import build_model

    folder = tmp_path_factory.mktemp("models")
    build_model(TINY_ARCHITECTURE).save(folder / "valid.keras")
    build_model(TINY_ARCHITECTURE, input_shape=(16, 16, 16, 6)).save(folder / "six-channels.keras")
    inputs = keras.Input(shape=(16, 16, 16, 3))
    flat = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2, 3)), output_shape=(3,), name="code")(inputs)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(flat)).save(folder / "lambda.keras")
    return {path.stem: path for path in folder.iterdir()}


def damaged(models: dict[str, Path], kind: str) -> bytes:
    valid = models["valid"].read_bytes()
    if kind == "truncated":
        return valid[: len(valid) // 2]
    if kind == "random-bytes":
        return np.random.default_rng(0).bytes(len(valid))
    if kind == "zip-not-a-model":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zipped:
            zipped.writestr("notes.txt", "not a model")
        return buffer.getvalue()
    if kind == "config-not-json":  # a .keras archive whose config is damaged
        buffer = io.BytesIO()
        with zipfile.ZipFile(models["valid"]) as source, zipfile.ZipFile(buffer, "w") as zipped:
            for name in source.namelist():
                zipped.writestr(name, b"{not json" if name == "config.json" else source.read(name))
        return buffer.getvalue()
    return models[kind].read_bytes()


def evaluate_with(project, model_bytes: bytes) -> subprocess.CompletedProcess:
    tiny_processed(project.path / "data" / "processed")
    (project.path / "models").mkdir(exist_ok=True)
    (project.path / "models" / "model.keras").write_bytes(model_bytes)
    return project.run("evaluate")


def test_evaluate_with_a_valid_model_writes_metrics(project, models):
    """The control for the cases below: the same data with an intact model evaluates."""
    result = evaluate_with(project, models["valid"].read_bytes())
    assert result.returncode == 0, result.stderr
    assert json.loads((project.path / "metrics" / "evaluate.json").read_text())["samples"] == 6
    assert temp_leftovers(project.path) == []


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "zip-not-a-model", "config-not-json"])
def test_evaluate_refuses_a_damaged_model_with_one_line(project, models, kind):
    line = error_line(evaluate_with(project, damaged(models, kind)))
    assert "models/model.keras is not a loadable Keras model" in line, line
    assert "dvc repro --force train" in line, line
    assert not (project.path / "metrics").exists()


def test_evaluate_refuses_a_lambda_layer_in_safe_mode(project, models):
    """A Lambda layer is code; safe mode refuses to run it, and the line says why."""
    import keras

    assert keras.saving.load_model(models["lambda"], safe_mode=False)  # the file itself is a sound model
    line = error_line(evaluate_with(project, models["lambda"].read_bytes()))
    assert "models/model.keras" in line and "Lambda" in line and "safe mode" in line, line
    assert "dvc repro --force train" in line, line
    assert not (project.path / "metrics").exists()


def test_evaluate_refuses_a_model_for_other_inputs(project, models):
    """A model trained on 6-channel grids cannot score 3-channel test grids; say so instead of crashing."""
    line = error_line(evaluate_with(project, models["six-channels"].read_bytes()))
    assert "models/model.keras" in line and "data/processed/test.npz" in line and "dvc repro" in line, line
    assert not (project.path / "metrics").exists()


# --- 2 and 5. SIGKILL mid-stage, recovery by dvc repro, determinism ----------------------------------------------------


def make_repo(folder: Path, **overrides) -> Path:
    """A committed git + DVC copy of the project: the current params, tiny, with a tiny model and `overrides`."""

    def change(params: dict) -> None:
        params["architectures"]["tiny"] = {**params["architectures"]["seed"], **TINY_ARCHITECTURE}
        params["model"] = "tiny"
        params["train"]["batch_size"] = 32
        for dotted, value in overrides.items():
            set_param(params, dotted.replace("__", "."), value)

    return make_dvc_repo(folder, change)


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

    def wait_for(self, fragment: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while fragment not in self.text():
            assert self.process.poll() is None, f"exited before {fragment!r}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {fragment!r} in {timeout}s:\n{self.text()}"
            time.sleep(0.02)

    def stage_process(self, script: str) -> psutil.Process:
        """The Python process running `script`, never the shell around it.

        DVC runs each command through $SHELL or /bin/sh; dash forks rather than execs, and its own command line
        (`sh -c "python stages/train.py"`) ends with the script too. Killing that shell would orphan the stage.
        """
        for child in psutil.Process(self.process.pid).children(recursive=True):
            if any(arg == script or arg.endswith(f"/{script}") for arg in child.cmdline()):
                return child
        raise AssertionError(f"no {script} process under {self.process.args}")

    def finish(self) -> int:
        code = self.process.wait(timeout=120)
        for reader in self.readers:
            reader.join(timeout=10)
        return code


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
    """Tiny synthetic data (fetch takes a few seconds), a tiny model and enough epochs to kill one mid-way."""
    return make_repo(
        tmp_path_factory.mktemp("faults-repo"),
        epochs=6,
        data__source="synthetic",
        data__synthetic_train_digits=60,
        data__synthetic_test_digits=40,
    )


@pytest.mark.slow
def test_sigkill_during_fetch_then_repro_recovers(pipeline_repo):
    """`dvc repro` and its fetch are killed (kill -9 of the process group) while the digits render."""
    repo = pipeline_repo
    # Fresh or already run by another test: without data/raw, dvc repro must run fetch, and only fetch changes.
    shutil.rmtree(repo / "data" / "raw", ignore_errors=True)
    previous, before = outputs(repo), entries(repo / "data")
    run = Watched([sys.executable, "-m", "dvc", "repro"], repo, dvc_env())
    run.wait_for("synthetic train:")  # the train split is rendered; the test split and the files are not
    os.killpg(run.process.pid, signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert "fetch: wrote" not in run.text(), "fetch finished before the kill; nothing was interrupted"
    assert outputs(repo) == previous  # data/raw still absent, everything else as it was
    leftovers = entries(repo / "data") - before
    assert all(name.startswith(".") for name in leftovers), leftovers  # temps only, never data/raw

    dvc(repo, "repro")
    assert_pipeline_complete(repo)
    assert temp_leftovers(repo) == [], "the killed fetch's temp folder was not cleaned up by the next run"


@pytest.mark.slow
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
        while not list((repo / "data").glob(".processed.*/train.npz")):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "preprocess never started writing"
            time.sleep(0.02)
        time.sleep(1.0)  # let it finish train.npz; it then blocks on the full pipe
        assert process.poll() is None, "preprocess finished although its stdout was blocked"
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


@pytest.mark.slow
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
        run.wait_for(f"Epoch 2/{params['epochs']}")  # epoch 1 is done
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


@pytest.mark.slow
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


# --- 3. the Kaggle key never leaks ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_kaggle_key_appears_nowhere_after_a_whole_dvc_repro(tmp_path):
    """Fetch from the fake Kaggle with a planted key, then every stage; grep every output, the lock and the log."""
    repo = make_repo(tmp_path / "repo", epochs=1, data__source="kaggle")
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
