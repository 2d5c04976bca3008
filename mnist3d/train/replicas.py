"""Training on several replicas: the tf.distribute strategy from params and TF_CONFIG, and which worker writes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from mnist3d.errors import PipelineError

TASK_TYPES = ("chief", "worker")  # the tasks MultiWorkerMirroredStrategy trains on
SEE_DOCS = "see docs/distributed.md"


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the cluster TF_CONFIG describes."""

    task_type: str
    index: int
    workers: int  # every training task, the chief included
    address: str = ""  # host:port where this task listens
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """The chief writes the model, the curves and the metrics: the `chief` task, else worker 0."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.index == 0 and not self.has_chief)


def read_tf_config(environ: dict[str, str] | None = None) -> ClusterTask:
    """Check TF_CONFIG (a PipelineError names what is wrong) and return this process's task; TensorFlow not needed."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        raise PipelineError(
            f"train.distribute is multi_worker but TF_CONFIG is not set; set it on every host ({SEE_DOCS})"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise PipelineError(f"TF_CONFIG is not valid JSON ({error.msg} at char {error.pos}); {SEE_DOCS}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise PipelineError(
            'TF_CONFIG needs "cluster": {"worker": ["host:port", ...]} and "task": {"type": "worker", "index": i}; '
            + SEE_DOCS
        )
    for name, addresses in cluster.items():
        if name not in TASK_TYPES or not isinstance(addresses, list) or not addresses:
            raise PipelineError(
                f'TF_CONFIG cluster "{name}" must be a "chief" or "worker" list of host:port; {SEE_DOCS}'
            )
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise PipelineError(f'TF_CONFIG cluster "{name}" address {address!r} is not host:port; {SEE_DOCS}')
    if len(cluster.get("chief", [])) > 1:
        raise PipelineError(f'TF_CONFIG cluster has {len(cluster["chief"])} "chief" addresses; at most one')
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise PipelineError(
            f"TF_CONFIG task {json.dumps(task)} is not in its cluster {json.dumps(cluster)}; "
            f'give this host its own "type" and "index" ({SEE_DOCS})'
        )
    workers = sum(len(addresses) for addresses in cluster.values())
    return ClusterTask(task_type, index, workers, cluster[task_type][index], has_chief="chief" in cluster)


def distribution_strategy(kind: str) -> Any:
    """`none`: the default strategy. `mirrored`: one replica per visible GPU (or per logical CPU without GPUs).
    `multi_worker`: one per host in TF_CONFIG; create it before any other TensorFlow op, as TensorFlow requires."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        task = read_tf_config()  # one clear line instead of TensorFlow's traceback
        try:
            return _keras_multi_worker_strategy()
        except tf.errors.UnknownError as error:  # TensorFlow's only word for a port it cannot listen on
            raise PipelineError(
                f"TF_CONFIG: this host's worker could not start at {task.address} ({error.message}); "
                "free that port or give this host another, the same in every host's TF_CONFIG"
            ) from None
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def _keras_multi_worker_strategy() -> Any:
    """MultiWorkerMirroredStrategy with the two things Keras 3's fit needs from it (keras-team/keras#20585)."""
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            """Keras asks for axis 0 of scalar logs, which means across replicas."""
            if isinstance(value, (tuple, list, dict)):
                # Keras "reduces" a whole input batch only to learn its shapes before the first step. This host's
                # share tells the same, without a collective that fails when the hosts' shares differ in size.
                return tf.nest.map_structure(lambda item: self.experimental_local_results(item)[0], value)
            first = self.experimental_local_results(value)[0]
            return super().reduce(reduce_op, value, axis if first.shape.rank else None)

        def experimental_distribute_dataset(self, dataset, options=None):
            """Shard by batch: our datasets come from a generator and arrays, not files that could be split per host.
            Every worker builds the same seeded batches and keeps its own part of each global batch."""
            replicas = self.num_replicas_in_sync
            # A last batch with fewer samples than replicas would leave a replica none, which fails the step on
            # every host; it is dropped instead (at most replicas - 1 samples an epoch).
            dataset = dataset.filter(lambda grids, labels: tf.shape(grids)[0] >= replicas)
            shard = tf.data.Options()
            shard.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            return super().experimental_distribute_dataset(dataset.with_options(shard), options)

    return KerasMultiWorkerStrategy()


def share_batch_statistics(model: Any, strategy: Any) -> None:
    """With several replicas, BatchNorm takes its statistics over the global batch, so every replica (and every
    host) keeps the same moving statistics, as one device training on the whole batch would."""
    import keras

    if strategy.num_replicas_in_sync > 1:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True  # read when the training step is traced, which happens later in fit


def weights_digest(model: Any) -> str:
    """A sha256 over every weight of `model`, in order: equal on every worker that trained the same model."""
    import numpy as np

    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()
