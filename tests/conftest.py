"""Shared helpers: scratch projects, tiny data files, stage, CLI and DVC runs, and the one-line error contract."""

import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
# The suite runs a worker per core and one more, each starting TensorFlow processes: one thread per TensorFlow pool
# keeps their pools from spinning on cores that the other workers need. Inherited by every subprocess.
os.environ.update(TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
sys.path.insert(0, str(ROOT))

from benchmarks.benchmark import PROJECT_FILES  # noqa: E402
from mnist3d.io.schema import VECTORS_FILE, Split, write_vectors  # noqa: E402

# The fuzzer's profiles: by default a few derandomized examples each, short and the same on every machine;
# `--hypothesis-profile=thorough` searches wider and keeps what fails in .hypothesis/.
SLOW_IS_FINE = [HealthCheck.too_slow]  # an HDF5 example takes milliseconds, more than Hypothesis expects
settings.register_profile(
    "quick", max_examples=200, derandomize=True, database=None, deadline=3000, suppress_health_check=SLOW_IS_FINE
)
settings.register_profile("thorough", max_examples=2000, deadline=10000, suppress_health_check=SLOW_IS_FINE)
settings.load_profile("quick")


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker more than the cores. Much of the suite waits on DVC and stage subprocesses, and on 2
    cores a third worker fills that time: the whole suite took 198 s against 236 s with two."""
    return (os.cpu_count() or 1) + 1


# These files' tests continue one copy of the pipeline from test to test, so each file runs whole on one worker.
ONE_WORKER = {"test_pipeline", "test_recovery", "test_dvc_usage"}
# Work is handed out in collection order (`--no-loadscope-reorder`): these files first, longest first, so that none
# of them starts late and runs alone at the end, while the short tests fill the gaps.
LONGEST_FIRST = [
    "test_pipeline",
    "test_recovery",
    "test_benchmark",
    "test_dvc_usage",
    "test_multi_worker",
    "test_faults",
    "test_model",
    "test_fetch",
]


def pytest_collection_modifyitems(items) -> None:
    """The longest files first (see LONGEST_FIRST)."""
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file keeps its own order


def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduler by scope, a scope being a whole ONE_WORKER file or else a single test: a worker gets the
    next one whenever it has two tests or fewer left, so single tests even out the workers' ends."""
    from xdist.scheduler import LoadScopeScheduling

    class FileOrTest(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return file if Path(file).stem in ONE_WORKER else nodeid

    return FileOrTest(config, log)


SECRET = "planted-secret-key-123"  # the Kaggle key tests plant (fake_kaggle.write_kaggle_json) and then grep for
DELETE = object()  # a value for set_param meaning: remove the key
# A conv net of a few hundred weights: enough to build, save, load and train for a test in seconds.
TINY_ARCHITECTURE = dict(
    blocks=[[4]], kernel_size=3, batch_norm=False, head="global_average", dense_units=0, dropout=0.0
)


def set_param(params: dict, dotted: str, value) -> None:
    """Set a param such as `data.source` in a params dict (or remove it, with DELETE)."""
    *parents, key = dotted.split(".")
    for name in parents:
        params = params[name]
    if value is DELETE:
        del params[key]
    else:
        params[key] = value


def edit_params(path: Path, changes: dict) -> None:
    """Apply set_param for each `dotted: value` to the params.yaml at `path`."""
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        set_param(params, dotted, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without Kaggle credentials or proxies, so no test reaches a real service."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env.update(extra or {})
    return env


def run_python(*args, cwd=None, env=None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """`python ARGS` in its own process, with the project importable and a clean_env; returns it with text output."""
    env = clean_env({"PYTHONPATH": str(ROOT), **(env or {})})
    args = [sys.executable, *map(str, args)]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def predict_cli(cwd: Path, *args, **options) -> subprocess.CompletedProcess:
    return run_python("-m", "mnist3d", "predict", *args, cwd=cwd, **options)


class Project:
    """A scratch working directory holding params.yaml, where stage scripts run as a user would run them."""

    def __init__(self, path: Path):
        self.path = path
        self.params = yaml.safe_load((ROOT / "params.yaml").read_text())
        self.save()

    def set(self, dotted: str, value) -> None:
        set_param(self.params, dotted, value)
        self.save()

    def save(self) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False))

    def run(self, stage: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_python(ROOT / "stages" / f"{stage}.py", cwd=self.path, env=env, timeout=timeout)

    def fetch_local(self, path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        self.set("data.source", "local")
        self.set("data.path", str(path))
        return self.run("fetch", env=env, timeout=120)

    def assert_nothing_fetched(self) -> None:
        """Nothing in data/: no data/raw, and no temporary folder."""
        assert not (self.path / "data").exists() or list((self.path / "data").iterdir()) == []


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "project").mkdir()
    return Project(tmp_path / "project")


def assert_no_secret(folder: Path, output: str) -> set[str]:
    """The planted key is neither in `output` nor in any file under `folder` (git's aside); returns the files read."""
    assert SECRET not in output
    scanned = [p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] != ".git"]
    assert scanned  # so the scan really looks at something
    for path in scanned:
        assert SECRET.encode() not in path.read_bytes(), path
    return {str(p.relative_to(folder)) for p in scanned}


FALLBACK = "error: unexpected "  # run_stage's last resort: a refusal must never come out through it


def error_line(result: subprocess.CompletedProcess, alone: bool = True, fallback: bool = False) -> str:
    """Assert exit 1, no traceback and one `error: ` line on stderr (with `alone`, nothing else there), which is a
    refusal of its own and not the unexpected-error fallback (unless `fallback`); return it."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert not alone or result.stderr.strip().splitlines() == errors, result.stderr
    assert fallback == errors[0].startswith(FALLBACK), errors[0]
    return errors[0]


def written(path: Path, content) -> Path:
    """Put at `path` text or bytes, an array (as .npy), a dict (write_h5) or what a function writes; return the path."""
    if callable(content):
        content(path)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, dict):
        write_h5(path, content)
    elif content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def write_h5(path: Path, tree: dict) -> None:
    """An HDF5 file from a dict: an array or list is a dataset, a dict a group, and the key "@label" a label attribute."""
    import h5py

    def fill(group, items: dict) -> None:
        for name, item in items.items():
            if name == "@label":
                group.attrs["label"] = item
            elif isinstance(item, dict):
                fill(group.create_group(name), item)
            else:
                group[name] = item

    with h5py.File(path, "w") as h5:
        fill(h5, tree)


def build_h5_item(h5, where, name: str, item: tuple, folder: Path) -> None:
    """Add `item` at where/name: ("group", {name: item}, label), or (kind, shape, dtype, values): a dataset of the
    values over and over, or a hard, soft or external link, external storage or a virtual dataset (data: elsewhere-*)."""
    import h5py

    if item[0] == "group":
        group = where.create_group(name)
        for child, leaf in item[1].items():
            build_h5_item(h5, group, child, leaf, folder)
        if item[2] is not None:
            group.attrs["label"] = item[2]
        return
    kind, shape, dtype, pool = item
    data, elsewhere = np.resize(np.array(pool), shape), folder / f"elsewhere-{name}"  # pool's values over and over
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and overflows become what numpy casts them to
        data = np.rec.fromarrays([data, data], names="a,b") if dtype == "compound" else data.astype(dtype)
    if kind in ("external-link", "virtual"):
        with h5py.File(elsewhere, "w") as other:
            other["data"] = data
    if kind == "dataset":
        where[name] = data
    elif kind == "hard":
        where[name] = h5["/"]  # a cycle
    elif kind == "soft":
        where[name] = h5py.SoftLink("/X_test")  # it may dangle, or point at itself
    elif kind == "external-link":
        where[name] = h5py.ExternalLink(str(elsewhere), "/data")
    elif kind == "external-storage":
        data = data.reshape(-1)  # h5py keeps no external storage for a scalar
        elsewhere.write_bytes(data.tobytes())
        where.create_dataset(name, data.shape, data.dtype, external=[(str(elsewhere), 0, h5py.h5f.UNLIMITED)])
    else:
        layout = h5py.VirtualLayout(data.shape, data.dtype)
        layout[...] = h5py.VirtualSource(str(elsewhere), "data", data.shape, data.dtype)
        where.create_virtual_dataset(name, layout)


def tiny_split(rows: int, seed: int = 0) -> Split:
    """Random voxel vectors in the dataset's schema: values in [0, 1], each row's max 1, labels 0..9 in pairs."""
    rng = np.random.default_rng(seed)
    x = rng.random((rows, 4096)) * (rng.random((rows, 4096)) < 0.1)
    x[:, 0] = 1.0
    return Split(x, np.arange(rows) // 2 % 10)


def write_tiny_vectors(path: Path, train: int = 20, test: int = 10) -> Path:
    write_vectors(path, {"train": tiny_split(train), "test": tiny_split(test, seed=1)})
    return path


def tiny_zip_bytes(extra: dict[str, bytes] | None = None, with_vectors: bool = True) -> bytes:
    """A zip laid out like Kaggle's 3d-mnist.zip, with a tiny vectors file (and `extra` entries)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped, tempfile.TemporaryDirectory() as scratch:
        if with_vectors:
            zipped.write(write_tiny_vectors(Path(scratch) / VECTORS_FILE), VECTORS_FILE)
        for name, data in (extra or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def write_tiny_processed(folder: Path, rows: int = 6, channels: int = 3, labels=None, clouds: bool = True) -> None:
    """data/processed as preprocess writes it, random but valid: each split's grids and the training clouds."""
    from mnist3d.io.processed import pack_clouds, write_packed_clouds, write_processed

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(rows) // 2 % 10 if labels is None else labels
    for name in ("train", "test"):
        write_processed(folder / f"{name}.npz", rng.random((rows, 16, 16, 16, channels), dtype=np.float32), labels)
    if clouds:
        packed = pack_clouds([rng.normal(size=(3, 50)) for _ in range(rows // 2)], labels[0::2])
        write_packed_clouds(folder / "train_points.npy", folder / "train_clouds.npz", packed)


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


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def reproduced_repo(folder: Path) -> Path:
    """A copy of the project with tiny_synthetic params in a new git repo, folder/repo, after one `dvc repro`: outputs
    and lock committed, its output in folder/repro.log. A user's Kaggle credentials (SECRET) are in every stage's
    environment and in KAGGLE_CONFIG_DIR, where a careless stage would find them: test_pipeline greps for them."""
    from tests.fake_kaggle import write_kaggle_json

    repo = folder / "repo"
    for name in PROJECT_FILES:  # what the benchmark copies: the pipeline, without data, outputs or tests
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    tiny_synthetic(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project copy")
    credentials = write_kaggle_json(folder / "kaggle-config").parent
    env = {"KAGGLE_CONFIG_DIR": str(credentials), "KAGGLE_USERNAME": "tester", "KAGGLE_KEY": SECRET}
    result = dvc(repo, "repro", env=env)
    (folder / "repro.log").write_text(result.stdout + result.stderr)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline run")
    return repo


@pytest.fixture(scope="session")
def baseline_repo(tmp_path_factory, worker_id) -> Path:
    """One reproduced_repo for the whole run, read-only: modules take their own copy_repo of it. Under pytest-xdist
    the first worker to need it builds it in the run's shared temp folder while the others wait on a lock."""
    if worker_id == "master":  # no xdist: this process's own temp folder
        return reproduced_repo(tmp_path_factory.mktemp("baseline"))
    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above each worker's own
    with open(shared / "baseline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / "baseline.done").exists():
            shutil.rmtree(shared / "baseline", ignore_errors=True)  # what a worker that failed building left
            reproduced_repo(shared / "baseline")
            (shared / "baseline.done").touch()
    return shared / "baseline" / "repo"


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


def copy_repo(repo: Path, folder: Path) -> Path:
    """A copy of a git + DVC repo with its outputs and cache, but not DVC's temp state (locks, queue, exp clones)."""
    return shutil.copytree(
        repo, folder, symlinks=True, ignore=lambda where, names: ["tmp"] if where == str(repo / ".dvc") else []
    )


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (relative path -> bytes), skipping bytecode caches."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def temp_leftovers(folder: Path) -> list[str]:
    """Dot-named temporaries (`.<name>.*.tmp*`) anywhere under the folders where stages write."""
    found = [p for name in ("data", "models", "metrics", "plots") for p in (folder / name).rglob(".*.tmp*")]
    return sorted(str(p.relative_to(folder)) for p in found)
