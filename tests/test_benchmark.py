"""benchmarks/benchmark.py: its forward-FLOP counter, and a whole run through DVC on tiny synthetic data."""

import json
import re
from pathlib import Path

import pytest
import yaml

from benchmarks.benchmark import figure_arguments, forward_flops
from mnist3d.data.synthetic import write_dataset
from mnist3d.train.model import build_model
from tests.conftest import ROOT, TINY_ARCHITECTURE, dvc_env, error_line, run_python

BENCHMARK, ARCH = ROOT / "benchmarks/benchmark.py", TINY_ARCHITECTURE.items()
# Both recipes' models made tiny and trained for one epoch of small batches; every other param is the recipe's.
TINY = [f"architectures.{preset}.{key}={json.dumps(value)}" for preset in ("seed", "compact") for key, value in ARCH]
TINY += ["epochs=1", "train.batch_size=16"]


def run_benchmark(*args: str, cwd: Path):
    return run_python(BENCHMARK, *args, cwd=cwd, env=dvc_env(), timeout=600)


def test_forward_flops_counts_conv_and_dense_multiply_adds():
    seed = yaml.safe_load((ROOT / "params.yaml").read_text())["architectures"]["seed"]
    macs = (
        16**3 * 27 * 3 * 32 + 8**3 * 27 * 32 * 64 + 4**3 * 27 * 64 * 128 + 2**3 * 27 * 128 * 256 + 256 * 128 + 128 * 10
    )
    assert forward_flops(build_model(seed)) == 2 * macs


def test_the_recorded_command_drops_only_where_files_go():
    argv = ["--source", "synthetic", "--keep", "/tmp/k", "--set", "epochs=2", "--out=r.md", "--set", "seed=1"]
    assert figure_arguments(argv) == ["--source", "synthetic", "--set", "epochs=2", "--set", "seed=1"]


def test_missing_data_is_one_error_line(tmp_path):
    result = run_benchmark("--data", str(tmp_path / "3d-mnist.zip"), "--out", str(tmp_path / "out.md"), cwd=tmp_path)
    assert "3d-mnist.zip not found" in error_line(result)
    assert not (tmp_path / "out.md").exists()


def right_out_of(count: int, cell: str) -> bool:
    """Whether a report cell is an accuracy over `count` samples: a whole number of right answers over `count`."""
    right = float(cell) * count
    return 0 <= right <= count and abs(right - round(right)) < 1e-4 * count


@pytest.mark.slow
def test_both_recipes_run_through_dvc_and_the_report_holds_their_accuracy_walls_and_ratio(tmp_path):
    data = tmp_path / "tiny"  # 40 + 10 digits: 80 training rows (12 held out for validation), 20 test rows
    data.mkdir()
    write_dataset(data, 40, 10, seed=0)
    out = tmp_path / "results.md"
    result = run_benchmark("--data", str(data), "--out", str(out), *(f"--set={s}" for s in TINY), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # Each recipe went through DVC, all four stages, with its own params reaching the train stage.
    assert result.stdout.count("Ran experiment(s): ") == 2
    for stage in ("fetch", "preprocess", "train", "evaluate"):
        assert result.stdout.count(f"Running stage '{stage}'") == 2, stage
    assert "train: 68 samples per epoch (68 fixed, augment=none)" in result.stdout  # seed: no fresh copies
    assert "train: 102 samples per epoch (68 fixed, augment=clouds)" in result.stdout  # default: 34 more
    report = out.read_text()
    assert report.startswith(f"Command: `python benchmarks/benchmark.py --data {data} --set=")  # --out goes
    assert "\nData: tiny, 80 train / 20 test vectors.\nMachine: " in report and "tensorflow 2." in report
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in report.splitlines())}
    walls = {}
    for name in ("seed", "default"):
        test, original, rotated, validation, epochs, wall, *stages, rate = rows[name][1:]
        valid = re.fullmatch(r"(\S+) \((\S+) / (\S+)\)", validation).groups()
        counted = zip((20, 10, 10, 12, 6, 6), (test, original, rotated, *valid), strict=True)
        assert all(right_out_of(count, cell) for count, cell in counted), rows[name]
        assert epochs == "1"
        walls[name] = float(wall.removesuffix(" s"))
        seconds = [float(stage.removesuffix(" s")) for stage in stages]
        assert len(seconds) == 4 and all(s > 0 for s in seconds) and sum(seconds) <= walls[name] + 0.3
        assert float(rate) > 0
    ratio = re.search(r"the default took \*\*(\S+)x\*\* the notebook recipe's wall \((\S+) s against (\S+) s", report)
    assert (float(ratio[2]), float(ratio[3])) == (walls["default"], walls["seed"])
    assert float(ratio[1]) == pytest.approx(walls["default"] / walls["seed"], abs=0.01)
    # The default's epoch taken apart: its model (tiny, on six channels: align=axes) and its samples.
    flops = forward_flops(build_model(TINY_ARCHITECTURE, input_shape=(16, 16, 16, 6)))
    assert (
        f"(102 training samples, 34 of them fresh copies, 12 validation; a forward pass is {flops / 1e6:.2f} MFLOP;"
        in report
    )
    parts = {}
    for part in ("forward and backward compute", "fresh rotated copies", "batching", "validation", "callbacks"):
        found = re.search(rf"^\| {part}.* \| (\d+\.\d\d)( \(\d+\.\d GFLOP/s, \d+ % of peak\))? \|$", report, re.M)
        assert found, part
        parts[part] = float(found[1])
    rest = re.search(r"^\| the rest \| (-?\d+\.\d\d) \((-?\d+) % of the epoch\) \|$", report, re.M)
    epoch = re.search(r"^\| \*\*the epoch as the train stage runs it\*\* \| \*\*(\d+\.\d\d)\*\* \|$", report, re.M)
    assert float(rest[1]) == pytest.approx(float(epoch[1]) - sum(parts.values()), abs=0.03)  # the parts add up
    faults = re.search(
        r"Minor page faults per training step: ([\d,]+) in that epoch\. .* malloc ([\d,]+) faults", report
    )
    assert faults, report  # both allocators measured, in fresh processes
    assert re.search(r"TensorFlow import \d+\.\d\d s \(its first import here\), reading train.npz \d", report)
