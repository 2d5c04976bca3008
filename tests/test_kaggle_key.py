"""The Kaggle key appears nowhere after a whole `dvc repro` that fetched from the fake Kaggle server."""

import pytest

from tests.conftest import (
    SECRET,
    assert_no_secret,
    assert_pipeline_complete,
    copy_repo,
    dvc,
    edit_params,
    tiny_zip_bytes,
)
from tests.fake_kaggle import FakeKaggle, kaggle_env

pytestmark = pytest.mark.slow


def test_kaggle_key_appears_nowhere_after_a_whole_dvc_repro(baseline_repo, tmp_path):
    """Fetch from the fake Kaggle with a planted key, then every stage; grep every output, the lock and the log."""
    repo = copy_repo(baseline_repo, tmp_path / "repo")  # 1 epoch of the tiny model; the tiny zip holds no clouds
    edit_params(repo / "params.yaml", {"data.source": "kaggle", "train.augment": "cube", "train.batch_size": 32})
    with FakeKaggle(tiny_zip_bytes()) as fake:
        # The key is also in the environment of every stage, which is where a careless dump would find it.
        env = kaggle_env(tmp_path, fake) | {"KAGGLE_USERNAME": "tester", "KAGGLE_KEY": SECRET}
        result = dvc(repo, "repro", env=env)
    assert any(r["path"] == fake.blob_path for r in fake.requests), "the zip was never downloaded from the fake"
    assert_pipeline_complete(repo)
    names = assert_no_secret(repo, result.stdout + result.stderr)
    assert {"dvc.lock", "params.yaml", "data/manifest.json", "models/model.keras", "metrics/train.json"} <= names
    assert any(".dvc/cache" in name for name in names)  # DVC's cache is scanned too
