"""The promise of issue 4, case by case: a stage either writes complete outputs, or exits 1 with one
`error: ` line that names the problem and the fix, no traceback, and nothing half-written.

Bad params, missing inputs and damaged model files are run as the real stage scripts in a scratch project.
Interruptions, recovery, determinism and the Kaggle key, run through `dvc repro`, are in test_recovery.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist3d.errors import PipelineError
from mnist3d.model import load_model
from mnist3d.processed import pack_clouds, write_clouds, write_processed
from tests.conftest import DELETE, TINY_ARCHITECTURE, error_line, files_under, temp_leftovers

# --- helpers ---------------------------------------------------------------------------------------------------------


def tiny_processed(folder: Path, rows: int = 6, channels: int = 3, seed: int = 0) -> None:
    """data/processed as preprocess writes it, random but valid: grids of each split and the training clouds."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(rows) // 2 % 10
    for name in ("train", "test"):
        write_processed(folder / f"{name}.npz", rng.random((rows, 16, 16, 16, channels), dtype=np.float32), labels)
    clouds = pack_clouds([rng.normal(size=(3, 50)) for _ in range(rows // 2)], labels[0::2])
    write_clouds(folder / "train_points.npy", folder / "train_clouds.npz", clouds)


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


def test_evaluate_refuses_a_damaged_model_with_one_line(project, models):
    """The stage's side of the cases below: one line, exit 1, no metrics."""
    line = error_line(evaluate_with(project, damaged(models, "truncated")))
    assert "models/model.keras is not a loadable Keras model" in line, line
    assert "dvc repro --force train" in line, line
    assert not (project.path / "metrics").exists()


# Which files load_model refuses, and with which words, is tested in-process, where each case costs no TF start.
@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "zip-not-a-model", "config-not-json"])
def test_load_model_refuses_a_damaged_file(models, kind, tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(damaged(models, kind))
    with pytest.raises(PipelineError) as refused:
        load_model(path)
    message = str(refused.value)
    assert message.startswith(f"{path} is not a loadable Keras model ("), message
    assert message.endswith("); retrain with: dvc repro --force train"), message


def test_load_model_refuses_a_lambda_layer_in_safe_mode(models):
    """A Lambda layer is code; safe mode refuses to run it, and the line says why."""
    import keras

    assert keras.saving.load_model(models["lambda"], safe_mode=False)  # the file itself is a sound model
    with pytest.raises(PipelineError) as refused:
        load_model(models["lambda"])
    message = str(refused.value)
    assert message.startswith(f"{models['lambda']} holds code (a Lambda layer), which safe mode refuses"), message
    assert message.endswith("retrain with: dvc repro --force train"), message


def test_evaluate_refuses_a_model_for_other_inputs(project, models):
    """A model trained on 6-channel grids cannot score 3-channel test grids; say so instead of crashing."""
    line = error_line(evaluate_with(project, models["six-channels"].read_bytes()))
    assert "models/model.keras" in line and "data/processed/test.npz" in line and "dvc repro" in line, line
    assert not (project.path / "metrics").exists()
