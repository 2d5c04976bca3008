"""Issue 4, case by case: a stage writes complete outputs, or exits 1 with one `error: ` line naming the problem and the
fix, no traceback and nothing half-written. Kills and recovery are in test_recovery.py."""

import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist3d.errors import PipelineError
from mnist3d.train.model import load_model
from tests.conftest import (
    DELETE,
    ROOT,
    TINY_ARCHITECTURE,
    error_line,
    files_under,
    run_python,
    temp_leftovers,
    write_tiny_processed,
)


def run_tracing_imports(project, stage: str):
    """Run a stage as its script; returns the result and the top-level modules loaded when it exited. (Not -X
    importtime: its lines go to stderr, which the stages silence around TensorFlow's import.)"""
    modules = project.path.parent / f"{stage}-modules.txt"  # outside the project, which must stay as it was
    script = ROOT / "stages" / f"{stage}.py"
    trace = (
        f"import atexit, runpy, sys; sys.argv = [{str(script)!r}]; "
        f"atexit.register(lambda: open({str(modules)!r}, 'w').write(' '.join(sys.modules))); "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    result = run_python("-c", trace, cwd=project.path)
    return result, {name.split(".")[0] for name in modules.read_text().split()}


def setting(key: str, value):
    return lambda project: project.set(key, value)


def processed(*param):
    return lambda project: (write_tiny_processed(project.path / "data" / "processed"), param and project.set(*param))


def confusion_rows(project) -> None:
    confusion = project.path / "metrics" / "confusion.json"
    confusion.parent.mkdir()
    confusion.write_text(json.dumps([{"actual": 1, "predicted": 1}, {"actual": 2, "predicted": 1}]))


PARAMS, NOTHING = "error: params.yaml: ", lambda project: None
CANNOT_START = {  # the stage (the id's first word), what the scratch project gets first, and fragments of the line
    # Which params are refused with which words is tested in-process in test_params.py; these show what only a
    # process shows. Every stage checks all of params.yaml: a typo in `evaluate` stops fetch, not a stage 14 min on.
    "fetch-typo-in-evaluate": (
        setting("evaluate.tta_view", 4),
        [f"{PARAMS}unknown key evaluate.tta_view; known keys are batch_size, tta_views"],
    ),
    "preprocess-later-param": (setting("evaluate.tta_views", 25), [f"{PARAMS}evaluate.tta_views", "at most 24"]),
    "train-seed-deleted": (setting("train.seed", DELETE), [f"{PARAMS}train.seed is missing"]),
    "evaluate-unknown-preset": (setting("model", "resnet"), [f"{PARAMS}model 'resnet'", "compact", "seed"]),
    "train-broken-yaml": (
        lambda project: (project.path / "params.yaml").write_text("epochs: 3\ntrain: [unclosed\n"),
        ["error: params.yaml is not valid YAML at line "],
    ),
    # a missing input: the line names the command that makes it
    "preprocess": (NOTHING, ["data/raw/full_dataset_vectors.h5 not found", "dvc repro fetch"]),
    "train": (NOTHING, ["data/processed/train.npz not found", "dvc repro preprocess"]),
    "evaluate-without-a-model": (processed(), ["models/model.keras not found", "dvc repro train"]),
    "evaluate-without-test-data": (NOTHING, ["data/processed/test.npz not found", "dvc repro preprocess"]),
    "plot-without-metrics": (NOTHING, ["metrics/confusion.json", "dvc repro evaluate"]),
    "plot-without-training-curves": (confusion_rows, ["metrics/live", "dvc repro train"]),
    # 0.9 passes the params check, but 6 rows are 3 pairs and 0.9 of them holds out all 3
    "train-no-training-pairs": (processed("train.validation_split", 0.9), ["train.validation_split"]),
}


@pytest.mark.parametrize("case", CANNOT_START)
def test_a_stage_that_cannot_start_says_why_in_one_line_before_tensorflow(project, case):
    """Bad params or a missing input: exit 1, one line naming the key, or the input and the command that makes it;
    nothing written (no temp folder either), and TensorFlow never imported."""
    prepare, fragments = CANNOT_START[case]
    prepare(project)
    before, listing = files_under(project.path), sorted(project.path.iterdir())
    result, imported = run_tracing_imports(project, case.split("-")[0])
    line = error_line(result)
    assert line.startswith("error: ") and all(fragment in line for fragment in fragments), line
    assert files_under(project.path) == before and sorted(project.path.iterdir()) == listing
    assert not imported & {"tensorflow", "keras"}, f"{case}: TensorFlow imported before it stopped"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Real .keras files: a valid tiny model, one with a Lambda layer, one that expects 6 channels, one saved without
    what it was built with, one with NaN weights, and one for 12 classes."""
    import keras

    from mnist3d.train.model import BuiltWith, build_model, save_model

    folder, plain = tmp_path_factory.mktemp("models"), BuiltWith("Oranges", "none", 1)
    save_model(build_model(TINY_ARCHITECTURE), folder / "valid.keras", plain)
    six = build_model(TINY_ARCHITECTURE, input_shape=(16, 16, 16, 6))
    save_model(six, folder / "six-channels.keras", BuiltWith("Oranges", "axes", 1))
    build_model(TINY_ARCHITECTURE).save(folder / "unrecorded.keras")
    broken = build_model(TINY_ARCHITECTURE)
    broken.set_weights([np.full_like(weights, np.nan) for weights in broken.get_weights()])
    save_model(broken, folder / "nan-weights.keras", plain)
    inputs = keras.Input(shape=(16, 16, 16, 3))
    flat = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2, 3)), output_shape=(3,), name="code")(inputs)
    save_model(keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(flat)), folder / "lambda.keras", plain)
    twelve = keras.Model(inputs, keras.layers.Dense(12, activation="softmax")(keras.layers.Flatten()(inputs)))
    save_model(twelve, folder / "twelve-classes.keras", plain)
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
    write_tiny_processed(project.path / "data" / "processed")
    (project.path / "models").mkdir(exist_ok=True)
    (project.path / "models" / "model.keras").write_bytes(model_bytes)
    return project.run("evaluate")


def test_evaluate_refuses_a_damaged_model_or_one_for_other_inputs(project, models):
    """The stage's side of the in-process cases below: a damaged model, one trained on 6-channel grids for these
    3-channel ones, or one whose outputs are NaN, ends in one line and no metrics. Each line names its own cause, so
    none can pass for another."""
    for kind, fragments in [
        ("truncated", ["models/model.keras is not a loadable Keras model", "dvc repro --force train"]),
        ("six-channels", ["models/model.keras expects grids of shape (16, 16, 16, 6)", "gives (16, 16, 16, 3)"]),
        ("nan-weights", ["models/model.keras gives outputs that are NaN or Inf", "dvc repro --force train"]),
    ]:
        line = error_line(evaluate_with(project, damaged(models, kind)))
        assert all(fragment in line for fragment in fragments), line
        assert not (project.path / "metrics").exists() and temp_leftovers(project.path) == []


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


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("unrecorded", "does not record the colormap, alignment and views its inputs were built with"),
        ("twelve-classes", "outputs 12 classes, not the 10 digits"),
        ("truncated", "is not a loadable Keras model (BadZipFile)"),
    ],
)
def test_a_model_that_does_not_say_how_it_was_built_or_does_not_classify_digits_is_refused(models, kind, fragment):
    from mnist3d.train.model import load_trained

    path = models[kind] if kind in models else models["valid"].with_name(f"{kind}.keras")
    if kind not in models:
        path.write_bytes(damaged(models, kind))
    with pytest.raises(PipelineError) as refused:
        load_trained(path)
    assert str(refused.value).startswith(f"{path} ") and fragment in str(refused.value), refused.value
    assert str(refused.value).endswith("retrain it with: dvc repro --force train"), refused.value


def test_load_model_refuses_a_lambda_layer_in_safe_mode(models):
    """A Lambda layer is code; safe mode refuses to run it, and the line says why."""
    import keras

    assert keras.saving.load_model(models["lambda"], safe_mode=False)  # the file itself is a sound model
    with pytest.raises(PipelineError) as refused:
        load_model(models["lambda"])
    message = str(refused.value)
    assert message.startswith(f"{models['lambda']} holds code (a Lambda layer), which safe mode refuses"), message
    assert message.endswith("retrain with: dvc repro --force train"), message
