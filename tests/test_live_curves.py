"""The curves and metrics/train.json grow every epoch while train runs; an interrupted run leaves neither behind."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist3d.processed import write_processed
from tests.conftest import ROOT, TINY_ARCHITECTURE, clean_env

TRAIN_CURVE = Path("metrics/live/plots/metrics/train/accuracy.tsv")
EPOCHS = 500  # far more than the test waits for: the run must still be going when the first epochs are read


def tiny_training_project(project) -> None:
    rng = np.random.default_rng(0)
    processed = project.path / "data" / "processed"
    processed.mkdir(parents=True)
    write_processed(processed / "train.npz", rng.random((16, 16, 16, 16, 3), dtype=np.float32), np.arange(16) % 10)
    project.set("epochs", EPOCHS)
    project.set("architectures.compact", TINY_ARCHITECTURE)
    project.set("train.augment", "none")
    project.set("train.batch_size", 8)
    project.set("train.validation_split", 0.25)


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.is_file() else []  # below the header


def interruptible() -> None:
    """In the child, before it starts: SIGINT as a terminal's Ctrl-C delivers it.

    A test run started in the background (as CI may start it) passes SIGINT on ignored, and Python then leaves it
    ignored: train would never see the interrupt and would run to its last epoch (seen in a clean-clone CI run).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_curves_and_train_json_are_readable_while_training_runs_and_an_interrupt_removes_them(project):
    tiny_training_project(project)
    # An older run's curves and summary, as a run by hand finds them: the new run must not mix with them.
    stale = project.path / "metrics" / "live" / "plots" / "metrics" / "train" / "old_metric.tsv"
    stale.parent.mkdir(parents=True)
    stale.write_text("step\told_metric\n0\t1.0\n")
    (project.path / "metrics" / "train.json").write_text('{"epochs": 99}\n')

    train = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=project.path,
        env=clean_env({"PYTHONUNBUFFERED": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 180
        while len(rows(project.path / TRAIN_CURVE)) < 2 and train.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert train.poll() is None, "train ended before its curves could be read:\n" + train.communicate()[1][-3000:]
        assert len(rows(project.path / TRAIN_CURVE)) >= 2, "no epoch logged within 3 minutes"
        summary = json.loads((project.path / "metrics" / "train.json").read_text())
        assert 1 <= summary["epochs"] < EPOCHS and summary["augment"] == "none"
        logged = rows(project.path / "metrics/live/plots/metrics/eval/accuracy.tsv")[summary["epochs"] - 1]
        assert float(logged.split("\t")[1]) == pytest.approx(summary["final"]["val_accuracy"])
        assert not stale.exists(), "the new run's curves sit beside an older run's"
        steps = [int(row.split("\t")[0]) for row in rows(project.path / TRAIN_CURVE)]
        assert steps[:2] == [0, 1], steps
        assert not (project.path / "models" / "model.keras").exists(), "the model was written before training ended"

        train.send_signal(signal.SIGINT)  # Ctrl-C
        _, stderr = train.communicate(timeout=120)
    finally:
        if train.poll() is None:
            train.kill()
            train.communicate()
    assert train.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted"), stderr[-3000:]
    # a failed run leaves no partial curves, no summary and no model: only a kill can, and DVC never records it
    assert sorted(p.name for p in project.path.iterdir()) == ["data", "params.yaml"]
