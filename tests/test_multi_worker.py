"""Training across hosts: two workers on 127.0.0.1 train one epoch together; only the chief writes."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist3d.errors import PipelineError
from mnist3d.processed import write_processed
from mnist3d.replicas import read_tf_config
from tests.conftest import ROOT, TINY_ARCHITECTURE, Project, clean_env, error_line


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


def test_multi_worker_train_without_tf_config_is_one_line_and_writes_nothing(project):
    project.set("train.distribute", "multi_worker")
    line = error_line(project.run("train", env={"TF_CONFIG": ""}))
    assert "TF_CONFIG is not set" in line and "multi_worker" in line, line
    assert sorted(p.name for p in project.path.iterdir()) == ["params.yaml"]


def test_a_port_in_use_is_named_in_one_line(project):
    processed = project.path / "data" / "processed"
    processed.mkdir(parents=True)
    write_processed(processed / "train.npz", np.zeros((4, 16, 16, 16, 3), dtype=np.float32), np.arange(4))
    project.set("train.augment", "none")
    project.set("train.distribute", "multi_worker")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        line = error_line(project.run("train", env=tf_config({"worker": [address]})))
    assert address in line and "could not start" in line and "port" in line, line
    assert sorted(p.name for p in project.path.iterdir()) == ["data", "params.yaml"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def host(folder: Path) -> Project:
    """One host's copy of the project: the same params and the same data on each."""
    folder.mkdir()
    project = Project(folder)
    rng = np.random.default_rng(0)
    processed = folder / "data" / "processed"
    processed.mkdir(parents=True)
    write_processed(processed / "train.npz", rng.random((40, 16, 16, 16, 3), dtype=np.float32), np.arange(40) % 10)
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

    from mnist3d.replicas import weights_digest

    model = keras.saving.load_model(chief.path / "models" / "model.keras", compile=False)
    assert weights_digest(model) == digests[0]
    assert json.loads((chief.path / "metrics" / "train.json").read_text())["epochs"] == 1
    curve = chief.path / "metrics" / "live" / "plots" / "metrics" / "train" / "accuracy.tsv"
    assert len(curve.read_text().splitlines()) == 1 + 1
    # the other worker wrote nothing at all
    assert sorted(str(p.relative_to(worker.path)) for p in worker.path.rglob("*")) == worker_files
    assert "this worker nothing" in outputs[1][0]
