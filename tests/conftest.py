"""Shared fixtures: a scratch project with its own params.yaml, and tiny dataset files."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist3d.vectors import VECTORS_FILE, Split, write_vectors  # noqa: E402

# The fuzzer's profiles (tests/test_fuzz.py). By default a few examples each, derandomized: the run is short and the
# same on every machine. `--hypothesis-profile=thorough` searches wider and keeps what fails in .hypothesis/.
SLOW_IS_FINE = [HealthCheck.too_slow]  # an HDF5 example takes milliseconds, more than Hypothesis expects
settings.register_profile(
    "quick", max_examples=200, derandomize=True, database=None, deadline=3000, suppress_health_check=SLOW_IS_FINE
)
settings.register_profile("thorough", max_examples=2000, deadline=10000, suppress_health_check=SLOW_IS_FINE)
settings.load_profile("quick")

SECRET = "planted-secret-key-123"  # the Kaggle key tests plant (fake_kaggle.write_kaggle_json) and then grep for
DELETE = object()  # a value for set_param meaning: remove the key


def set_param(params: dict, dotted: str, value) -> None:
    """Set a param such as `data.source` in a params dict (or remove it, with DELETE)."""
    *parents, key = dotted.split(".")
    section = params
    for name in parents:
        section = section[name]
    if value is DELETE:
        del section[key]
    else:
        section[key] = value


def edit_params(path: Path, changes: dict) -> dict:
    """Apply set_param for each `dotted: value` to the params.yaml at `path`, rewrite it and return the params."""
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        set_param(params, dotted, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


# A conv net of a few hundred weights: enough to build, save, load and train for a test in seconds.
TINY_ARCHITECTURE = {
    "blocks": [[4]],
    "kernel_size": 3,
    "batch_norm": False,
    "head": "global_average",
    "dense_units": 0,
    "dropout": 0.0,
}


class Project:
    """A scratch working directory holding params.yaml, where stage scripts run as a user would run them."""

    def __init__(self, path: Path):
        self.path = path
        self.params = yaml.safe_load((ROOT / "params.yaml").read_text())
        self.save()

    def set(self, dotted: str, value) -> None:
        """Set a param such as `data.source` (or remove it, with DELETE) and rewrite params.yaml."""
        set_param(self.params, dotted, value)
        self.save()

    def save(self) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def run(self, stage: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `python stages/<stage>.py` here; returns the finished process with text output."""
        return subprocess.run(
            [sys.executable, str(ROOT / "stages" / f"{stage}.py")],
            cwd=self.path,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without Kaggle credentials or proxies, so no test reaches a real service."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(extra or {})
    return env


@pytest.fixture
def project(tmp_path: Path) -> Project:
    work = tmp_path / "project"
    work.mkdir()
    return Project(work)


def tiny_split(rows: int, seed: int = 0) -> Split:
    """Random voxel vectors in the dataset's schema: values in [0, 1], each row's max 1, labels 0..9 in pairs."""
    rng = np.random.default_rng(seed)
    x = rng.random((rows, 4096)) * (rng.random((rows, 4096)) < 0.1)
    x[:, 0] = 1.0
    return Split(x, np.arange(rows) // 2 % 10)


def write_tiny_vectors(path: Path, train: int = 20, test: int = 10) -> Path:
    write_vectors(path, {"train": tiny_split(train), "test": tiny_split(test, seed=1)})
    return path


def tiny_zip_bytes(tmp_path: Path, extra: dict[str, bytes] | None = None, with_vectors: bool = True) -> bytes:
    """A zip laid out like Kaggle's 3d-mnist.zip, with a tiny vectors file (and `extra` entries)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        if with_vectors:
            zipped.write(write_tiny_vectors(tmp_path / VECTORS_FILE), VECTORS_FILE)
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def tiny_model(params: dict) -> None:
    """Select a `tiny` architecture preset (TINY_ARCHITECTURE): training then costs little beyond TensorFlow's start."""
    params["architectures"]["tiny"] = {**params["architectures"]["seed"], **TINY_ARCHITECTURE}
    params["model"] = "tiny"


def tiny_synthetic(params: dict) -> None:
    """Params for a run of seconds: 1 epoch of the tiny model on 40 + 10 synthetic digits."""
    tiny_model(params)
    params["epochs"] = 1
    params["data"].update(source="synthetic", synthetic_train_digits=40, synthetic_test_digits=10)
    params["train"]["batch_size"] = 16


# --- a git + DVC copy of the project, for end-to-end tests ------------------------------------------------------------

COPIED = ["dvc.yaml", "params.yaml", "mnist3d", "stages", ".dvc/config", ".dvcignore", ".gitignore"]


def dvc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean env whose PATH starts with this interpreter's bin, so stage commands and queue workers run its `python`."""
    venv_bin = str(Path(sys.executable).parent)
    env = clean_env({"PATH": f"{venv_bin}:{clean_env()['PATH']}", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run DVC from this interpreter's environment in `repo`; by default a failure fails the test with its output."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=dvc_env(env), capture_output=True, text=True, timeout=600
    )
    assert not check or result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_dvc_repo(folder: Path, change_params=None) -> Path:
    """Copy the project into `folder`, let `change_params(params)` edit its params, and commit it to a new git repo."""
    for name in COPIED:
        source, target = ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    if change_params:
        change_params(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(folder, "init", "-q")
    git(folder, "config", "user.email", "test@example.com")
    git(folder, "config", "user.name", "test")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "project copy")
    return folder


def reproduced_repo(folder: Path, change_params=tiny_synthetic) -> Path:
    """A project copy (tiny synthetic params by default) after one `dvc repro`, its outputs and lock committed."""
    repo = make_dvc_repo(folder, change_params)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline run")
    return repo


@pytest.fixture(scope="session")
def baseline_repo(tmp_path_factory) -> Path:
    """One reproduced_repo per test process; modules that run DVC take their own copy_repo of it."""
    return reproduced_repo(tmp_path_factory.mktemp("baseline"))


def copy_repo(repo: Path, folder: Path) -> Path:
    """A copy of a git + DVC repo with its outputs and cache, but not DVC's temp state (locks, queue, exp clones)."""
    return shutil.copytree(
        repo, folder, symlinks=True, ignore=lambda where, names: ["tmp"] if where == str(repo / ".dvc") else []
    )


OUTPUT_DIRS = ("data", "models", "metrics", "plots")  # where stages write, and so where temporaries may be left


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (relative path -> bytes), skipping bytecode caches."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def temp_leftovers(folder: Path) -> list[str]:
    """Dot-named temporaries (`.<name>.*.tmp*`) anywhere under the output folders of `folder`."""
    found = []
    for name in OUTPUT_DIRS:
        if (folder / name).is_dir():
            found += [str(p.relative_to(folder)) for p in (folder / name).rglob(".*.tmp*")]
    return sorted(found)


def error_line(result: subprocess.CompletedProcess, alone: bool = True) -> str:
    """Assert exit 1, no traceback and one `error: ` line on stderr (with `alone`, nothing else there); return it."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert not alone or result.stderr.strip().splitlines() == errors, result.stderr
    return errors[0]
