"""params.yaml checks: typos and bad values fail early with one line that names the key."""

import os

import pytest
import yaml

from mnist3d.errors import PipelineError
from mnist3d.params import load_architecture, load_section, load_top_level
from tests.conftest import ROOT


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())

    def write(change=None):
        data = yaml.safe_load(yaml.safe_dump(params))
        if change:
            change(data)
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def test_the_shipped_params_are_valid():
    path = ROOT / "params.yaml"
    for section in ("data", "preprocess", "train", "evaluate"):
        load_section(section, path)
    assert load_top_level("epochs", path) >= 1
    assert load_architecture(path)["blocks"]


def test_epochs_is_top_level_so_dvc_exp_run_s_epochs_works():
    assert "epochs" in yaml.safe_load((ROOT / "params.yaml").read_text())


def test_seed_preset_is_the_notebook_model():
    seed = yaml.safe_load((ROOT / "params.yaml").read_text())["architectures"]["seed"]
    assert seed["blocks"] == [[32], [64], [128], [256]]
    assert (seed["kernel_size"], seed["head"], seed["dense_units"], seed["dropout"]) == (3, "flatten", 128, 0.5)
    assert seed["batch_norm"] is False


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("data", "source", "ftp", "data.source must be one of kaggle, local, synthetic"),
        ("data", "dataset", "../../../etc/passwd", "data.dataset must be a Kaggle dataset as owner/slug"),
        ("data", "dataset", "daavoo/3d-mnist/1", "data.dataset must be a Kaggle dataset as owner/slug"),
        ("data", "dataset", "daavoo/3d-mnist\n", "data.dataset must be a Kaggle dataset as owner/slug"),
        ("data", "dataset", "daavoo/" + "x" * 51, "data.dataset must be a Kaggle dataset as owner/slug"),
        ("data", "dataset", ["daavoo/3d-mnist"], "data.dataset must be a Kaggle dataset as owner/slug"),
        ("train", "batch_size", 0, "train.batch_size must be a positive integer"),
        ("train", "validation_split", 1.0, "train.validation_split must lie strictly between 0 and 1"),
        ("train", "learning_rate", -1, "train.learning_rate must be a number > 0"),
        ("preprocess", "colormap", "Orangez", "preprocess.colormap must name a matplotlib colormap"),
    ],
)
def test_bad_values_name_the_key(params_file, section, key, value, message):
    path = params_file(lambda p: p[section].__setitem__(key, value))
    with pytest.raises(PipelineError, match=message):
        load_section(section, path)


def test_unknown_keys_are_typos_not_ignored(params_file):
    path = params_file(lambda p: p["train"].__setitem__("batchsize", 64))
    with pytest.raises(PipelineError, match="unknown key train.batchsize"):
        load_section("train", path)


def test_missing_key_is_named(params_file):
    path = params_file(lambda p: p["train"].pop("seed"))
    with pytest.raises(PipelineError, match="train.seed is missing"):
        load_section("train", path)


@pytest.mark.parametrize("epochs", [0, -3, 2.5, "ten", True])
def test_epochs_must_be_a_positive_integer(params_file, epochs):
    path = params_file(lambda p: p.__setitem__("epochs", epochs))
    with pytest.raises(PipelineError, match="epochs must be a positive integer"):
        load_top_level("epochs", path)


def test_unknown_model_preset_lists_the_known_ones(params_file):
    path = params_file(lambda p: p.__setitem__("model", "resnet"))
    with pytest.raises(PipelineError, match="model 'resnet' is not a preset; use one of compact, seed"):
        load_architecture(path)


def test_too_many_blocks_for_a_16_voxel_grid(params_file):
    path = params_file(
        lambda p: (
            p.__setitem__("model", "seed"),
            p["architectures"]["seed"].__setitem__("blocks", [[8] for _ in range(5)]),
        )
    )
    with pytest.raises(PipelineError, match="architectures.seed.blocks must be 1 to 4 blocks"):
        load_architecture(path)


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("epochs: 5\ntrain: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML at line"):
        load_top_level("epochs", path)


# --- every section at every start, and params that would explode -----------------------------------------------------


@pytest.mark.parametrize("reader", ["data", "preprocess", "train", "evaluate", "epochs", "architecture"])
def test_a_typo_in_any_section_stops_every_loader(params_file, reader):
    """A typo in `evaluate` stops the fetch stage's load of `data`, and so on for every loader."""
    path = params_file(lambda p: p["evaluate"].__setitem__("tta_view", 4))
    load = {"epochs": lambda: load_top_level("epochs", path), "architecture": lambda: load_architecture(path)}
    with pytest.raises(PipelineError, match="unknown key evaluate.tta_view"):
        load.get(reader, lambda: load_section(reader, path))()


def test_an_unused_preset_and_an_unknown_section_are_checked_too(params_file):
    path = params_file(lambda p: p["architectures"]["seed"].__setitem__("kernel_size", 0))
    with pytest.raises(PipelineError, match="architectures.seed.kernel_size must be a positive integer"):
        load_section("data", path)
    path = params_file(lambda p: p.__setitem__("trian", {"epochs": 3}))
    with pytest.raises(PipelineError, match="unknown section 'trian'"):
        load_section("data", path)


TOO_BIG = [
    ("epochs", None, 10**30),
    ("data", "version", 10**9),
    ("data", "timeout", 1e9),
    ("data", "synthetic_train_digits", 10**9),
    ("data", "synthetic_test_digits", 10**9),
    ("data", "seed", 2**64),
    ("train", "batch_size", 10**6),
    ("train", "learning_rate", 1e6),
    ("train", "seed", 2**40),
    ("train", "copies_per_epoch", 10**6),
    ("evaluate", "batch_size", 10**6),
    ("evaluate", "tta_views", 25),
    ("architecture", "kernel_size", 10**4),
    ("architecture", "dense_units", 10**7),
    ("architecture", "blocks", [[10**7]]),
]


@pytest.mark.parametrize(("section", "key", "value"), TOO_BIG, ids=[f"{s}.{k}" for s, k, _ in TOO_BIG])
def test_every_number_has_an_upper_bound(params_file, section, key, value):
    """No number reaches TensorFlow or numpy so large that it fails there with a traceback (or runs for ever)."""

    def change(p):
        if key is None:
            p[section] = value
        elif section == "architecture":
            p["architectures"][p["model"]][key] = value
        else:
            p[section][key] = value

    path = params_file(change)
    with pytest.raises(PipelineError, match=r"(at most|up to|from 0 to) [\d,]+"):
        load_section("data", path)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """A 'billion laughs' file would take seconds and gigabytes to build; it is refused at the first anchor."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "\n".join(lines) + "\n")
    with pytest.raises(PipelineError, match="anchors and aliases"):
        load_section("data", path)


def test_deeply_nested_yaml_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("epochs: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(PipelineError, match="nested more than 10 levels"):
        load_section("data", path)


def test_params_that_is_a_directory_binary_or_a_fifo_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    os.mkfifo(tmp_path / "fifo.yaml")
    for name, message in [
        ("folder", "is a directory"),
        ("binary.yaml", "is not a text file"),
        ("fifo.yaml", "not a regular file"),
    ]:
        with pytest.raises(PipelineError, match=message):
            load_section("data", tmp_path / name)
