"""params.yaml checks: typos and bad values fail early with one line that names the key."""

import os
from functools import partial

import pytest

from mnist3d.errors import PipelineError
from mnist3d.params import load_architecture, load_section, load_top_level
from tests.conftest import DELETE, ROOT, edit_params

# Every loader the stages call; each checks all of params.yaml, so that a typo anywhere stops every stage.
LOADERS = {section: partial(load_section, section) for section in ("data", "preprocess", "train", "evaluate")}
LOADERS |= {"epochs": partial(load_top_level, "epochs"), "architecture": load_architecture}
BOUNDED = r"(at most|up to|from 0 to) [\d,]+"  # no number reaches TensorFlow or numpy so large that it fails there
OWNER_SLUG = "data.dataset must be a Kaggle dataset as owner/slug"
KERNEL = "architectures.seed.kernel_size"  # of a preset not in use
TOO_BIG = {"epochs": 10**30, "data.version": 10**9, "data.timeout": 1e9, "data.seed": 2**64, "train.seed": 2**40}
TOO_BIG |= {"data.synthetic_train_digits": 10**9, "data.synthetic_test_digits": 10**9, "train.batch_size": 10**6}
TOO_BIG |= {"train.learning_rate": 1e6, "train.copies_per_epoch": 10**6, "evaluate.batch_size": 10**6}
TOO_BIG |= {"evaluate.tta_views": 25, "architectures.compact.kernel_size": 10**4}
TOO_BIG |= {"architectures.compact.dense_units": 10**7, "architectures.compact.blocks": [[10**7]]}
CASES = [  # id, the params changed, the loader, and what the error must match
    ("source", {"data.source": "ftp"}, "data", "data.source must be one of kaggle, local, synthetic"),
    ("dataset-path", {"data.dataset": "../../../etc/passwd"}, "data", OWNER_SLUG),
    ("dataset-version", {"data.dataset": "daavoo/3d-mnist/1"}, "data", OWNER_SLUG),
    ("dataset-newline", {"data.dataset": "daavoo/3d-mnist\n"}, "data", OWNER_SLUG),
    ("dataset-too-long", {"data.dataset": "daavoo/" + "x" * 51}, "data", OWNER_SLUG),
    ("dataset-list", {"data.dataset": ["daavoo/3d-mnist"]}, "data", OWNER_SLUG),
    ("batch-size", {"train.batch_size": 0}, "train", "train.batch_size must be a positive integer"),
    ("split", {"train.validation_split": 1.0}, "train", "train.validation_split must lie strictly between 0 and 1"),
    ("rate", {"train.learning_rate": -1}, "train", "train.learning_rate must be a number > 0"),
    ("cmap", {"preprocess.colormap": "Orangez"}, "preprocess", "preprocess.colormap must name a matplotlib colormap"),
    ("unknown-key", {"train.batchsize": 64}, "train", "unknown key train.batchsize"),
    ("missing-key", {"train.seed": DELETE}, "train", "train.seed is missing"),
    *[(f"epochs={v}", {"epochs": v}, "epochs", "epochs must be a positive integer") for v in (0, -3, 2.5, "ten", True)],
    ("preset", {"model": "resnet"}, "architecture", "model 'resnet' is not a preset; use one of compact, seed"),
    (  # too many blocks for a 16-voxel grid (distinct lists: the same one five times would dump as YAML aliases)
        "blocks",
        {"model": "seed", "architectures.seed.blocks": [[8] for _ in range(5)]},
        "architecture",
        "architectures.seed.blocks must be 1 to 4 blocks",
    ),
    # A typo in `evaluate` stops the fetch stage's load of `data`, and so on for every loader.
    *[(f"typo-{name}", {"evaluate.tta_view": 4}, name, "unknown key evaluate.tta_view") for name in LOADERS],
    # an unused preset and an unknown section are checked too
    ("unused", {KERNEL: 0}, "data", f"{KERNEL} must be a positive integer"),
    ("unknown-section", {"trian": {"epochs": 3}}, "data", "unknown section 'trian'"),
    # every number has an upper bound (architectures.compact is the preset in use)
    *[(f"{key}-too-big", {key: value}, "data", BOUNDED) for key, value in TOO_BIG.items()],
]


def test_the_shipped_params_are_valid():
    path = ROOT / "params.yaml"
    for section in ("data", "preprocess", "train", "evaluate"):
        load_section(section, path)
    assert load_top_level("epochs", path) >= 1  # top-level, so that `dvc exp run -S epochs=...` works
    assert load_architecture(path)["blocks"]


@pytest.mark.parametrize(("changes", "loader", "message"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_bad_params_name_the_key(tmp_path, changes, loader, message):
    """Bad values, typos, missing keys and numbers too large: the loader raises one error that names the key."""
    path = tmp_path / "params.yaml"
    path.write_bytes((ROOT / "params.yaml").read_bytes())
    edit_params(path, changes)
    with pytest.raises(PipelineError, match=message):
        LOADERS[loader](path)


def test_yaml_that_would_explode_or_is_broken_is_refused(tmp_path):
    """A 'billion laughs' file would take seconds and gigabytes to build: it is refused at the first anchor."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    laughs = (ROOT / "params.yaml").read_text() + "\n".join(lines)
    deep, broken = "epochs: " + "[" * 50_000 + "]" * 50_000, "epochs: 5\ntrain: [unclosed"
    for text, message in [
        (laughs, "anchors and aliases"),
        (deep, "nested more than 10 levels"),
        (broken, "not valid YAML at line"),
    ]:
        (tmp_path / "params.yaml").write_text(text + "\n")
        with pytest.raises(PipelineError, match=message):
            load_section("data", tmp_path / "params.yaml")


def test_params_that_is_a_directory_binary_or_a_fifo_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    os.mkfifo(tmp_path / "fifo.yaml")
    named = {"folder": "is a directory", "binary.yaml": "is not a text file", "fifo.yaml": "not a regular file"}
    for name, message in named.items():
        with pytest.raises(PipelineError, match=message):
            load_section("data", tmp_path / name)
