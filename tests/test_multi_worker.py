"""Training processes: MirroredStrategy over two logical CPU devices; two workers on 127.0.0.1 that train one epoch
together while only the chief writes; and the curves and metrics/train.json, which grow every epoch while train runs
and which an interrupted run leaves behind neither of."""

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist3d.errors import PipelineError
from mnist3d.train.replicas import read_tf_config
from tests.conftest import ROOT, TINY_ARCHITECTURE, Project, clean_env, error_line, run_python, write_tiny_processed

MIRRORED = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from mnist3d.train.replicas import distribution_strategy
from mnist3d.train.fit import fit

rng = np.random.default_rng(0)
x = rng.random((40, 16, 16, 16, 3)).astype(np.float32)
y = np.repeat(np.arange(10), 4)
params = {"seed": 1, "validation_split": 0.2, "augment": "none", "copies_per_epoch": 1, "batch_size": 8,
          "learning_rate": 0.001, "label_smoothing": 0.0, "schedule": "constant", "distribute": "mirrored",
          "ema": 0.0, "flip_aligned": False, "threads": 0, "jit_compile": False}
architecture = {"blocks": [[4]], "kernel_size": 3, "batch_norm": True, "head": "global_average",
                "dense_units": 0, "dropout": 0.0}
model, history, validation = fit(x, y, params, architecture, 1, None, {"colormap": "Oranges", "align": "none"})
strategy = distribution_strategy("mirrored")
# every variable is mirrored on both devices
kernel = model.get_layer("block1_conv1").kernel.value
replicas = [v.device for v in kernel.values] if hasattr(kernel, "values") else [kernel.device]
# BatchNorm takes its statistics over the global batch, so both copies of its moving mean agree
moving_mean = [v.numpy().tolist() for v in model.get_layer("block1_conv1_bn").moving_mean.value.values]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "devices": replicas, "moving_mean": moving_mean,
                  "loss": history["loss"], "val_accuracy": history["val_accuracy"], "validation": validation}))
"""


def test_mirrored_strategy_trains_on_two_logical_devices():
    result = run_python("-c", MIRRORED)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert len(report["devices"]) == 2 and report["devices"][0] != report["devices"][1]
    assert "2 replica(s)" in result.stdout
    first, second = report["moving_mean"]
    assert first == second and first != [0.0] * 4  # trained, and the same on both devices
    assert len(report["loss"]) == 1 and 0.0 < report["loss"][0] < 10.0
    # the mirrored model, validated by Keras, and its plain copy that train.json is scored with agree
    assert report["validation"]["accuracy"] == report["val_accuracy"][0]


def tf_config(cluster: dict, task_type: str = "worker", index: int = 0) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_worker_zero_is_chief_unless_the_cluster_names_one():
    workers = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}
    assert read_tf_config(tf_config(workers, index=0)).is_chief
    assert not read_tf_config(tf_config(workers, index=1)).is_chief
    with_chief = {"chief": ["10.0.0.9:2222"], **workers}
    assert read_tf_config(tf_config(with_chief, "chief")).is_chief
    task = read_tf_config(tf_config(with_chief, index=0))
    assert not task.is_chief and task.workers == 3


@pytest.mark.parametrize(
    ("environ", "fragments"),
    [
        ({}, ["TF_CONFIG is not set", "docs/distributed.md"]),
        ({"TF_CONFIG": "{cluster"}, ["TF_CONFIG is not valid JSON"]),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, ['"task"', '"index"']),
        (tf_config({"worker": ["a:1", "b:2"]}, index=2), ['"index": 2', "not in its cluster"]),
        (tf_config({"worker": ["a:1"]}, "chief"), ['"type": "chief"', "not in its cluster"]),
        (tf_config({"worker": ["localhost"]}), ["'localhost'", "host:port"]),
        (tf_config({"ps": ["a:1"], "worker": ["b:2"]}), ['"ps"', '"chief" or "worker"']),
    ],
)
def test_a_missing_or_wrong_tf_config_is_named(environ, fragments):
    with pytest.raises(PipelineError) as raised:
        read_tf_config(environ)
    for fragment in fragments:
        assert fragment in str(raised.value), raised.value


def test_multi_worker_train_without_tf_config_or_with_its_port_in_use_is_one_line_and_writes_nothing(project):
    project.set("train.distribute", "multi_worker")
    line = error_line(project.run("train", env={"TF_CONFIG": ""}))
    assert "TF_CONFIG is not set" in line and "multi_worker" in line, line
    assert sorted(p.name for p in project.path.iterdir()) == ["params.yaml"]
    write_tiny_processed(project.path / "data" / "processed", rows=4, clouds=False)
    project.set("train.augment", "none")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        line = error_line(project.run("train", env=tf_config({"worker": [address]})))
    assert address in line and "could not start" in line and "port" in line, line
    assert sorted(p.name for p in project.path.iterdir()) == ["data", "params.yaml"]


def free_ports(count: int) -> list[int]:
    """Ports the OS gives, all held at once so that they differ, then let go for the workers to take."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def host(folder: Path) -> Project:
    """One host's copy of the project: the same params and the same data on each."""
    folder.mkdir()
    project = Project(folder)
    write_tiny_processed(folder / "data" / "processed", rows=40, labels=np.arange(40) % 10, clouds=False)
    project.set("epochs", 1)
    project.set("architectures.compact", {**TINY_ARCHITECTURE, "batch_norm": True})  # BatchNorm statistics too
    project.set("train.augment", "none")
    # 32 training rows in global batches of 7 (7, 7, 7, 7, 4): each splits unevenly across the two hosts, or
    # evenly. 8 validation rows: 7, then 1, which would leave one host nothing.
    project.set("train.batch_size", 7)
    project.set("train.validation_split", 0.2)
    project.set("train.distribute", "multi_worker")
    return project


def test_two_workers_end_with_the_same_weights_and_only_the_chief_writes(tmp_path):
    chief, worker = host(tmp_path / "chief"), host(tmp_path / "worker")
    worker_files = sorted(str(p.relative_to(worker.path)) for p in worker.path.rglob("*"))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    runs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "stages" / "train.py")],
            cwd=project.path,
            env=clean_env(tf_config(cluster, index=index)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index, project in enumerate((chief, worker))
    ]
    try:
        outputs = [run.communicate(timeout=240) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.communicate()
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, f"{stdout}\n{stderr[-3000:]}"
        assert "2 replica(s)" in stdout, stdout
        assert "5/5 - " in stdout, stdout  # train.batch_size is the global batch, split across the hosts
    digests = [re.search(r"weights ([0-9a-f]{64})", stdout).group(1) for stdout, _ in outputs]
    assert digests[0] == digests[1], "the workers ended with different weights"
    # the chief wrote the model (with those weights), the curves and the metrics
    import keras

    from mnist3d.train.replicas import weights_digest

    model = keras.saving.load_model(chief.path / "models" / "model.keras", compile=False)
    assert weights_digest(model) == digests[0]
    assert json.loads((chief.path / "metrics" / "train.json").read_text())["epochs"] == 1
    curve = chief.path / "metrics" / "live" / "plots" / "metrics" / "train" / "accuracy.tsv"
    assert len(curve.read_text().splitlines()) == 1 + 1
    # the other worker wrote nothing at all
    assert sorted(str(p.relative_to(worker.path)) for p in worker.path.rglob("*")) == worker_files
    assert "this worker nothing" in outputs[1][0]


TRAIN_CURVE = Path("metrics/live/plots/metrics/train/accuracy.tsv")
EPOCHS = 500  # far more than the test waits for: the run must still be going when the first epochs are read


def tiny_training_project(project) -> None:
    write_tiny_processed(project.path / "data" / "processed", rows=16, labels=np.arange(16) % 10, clouds=False)
    project.set("epochs", EPOCHS)
    project.set("architectures.compact", TINY_ARCHITECTURE)
    project.set("train.augment", "none")
    project.set("train.batch_size", 8)
    project.set("train.validation_split", 0.25)


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.is_file() else []  # below the header


def interruptible() -> None:
    """In the child, before it starts: SIGINT as Ctrl-C delivers it. A test run started in the background (as CI may
    start it) passes SIGINT on ignored, and Python leaves it so: train would run to its last epoch (seen in CI)."""
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
