"""Multi-device training: MirroredStrategy over two logical CPU devices trains one tiny epoch."""

import json
import subprocess
import sys

from tests.conftest import ROOT, clean_env

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from mnist3d.replicas import distribution_strategy
from mnist3d.training import fit

rng = np.random.default_rng(0)
x = rng.random((40, 16, 16, 16, 3)).astype(np.float32)
y = np.repeat(np.arange(10), 4)
params = {"seed": 1, "validation_split": 0.2, "augment": "none", "copies_per_epoch": 1, "batch_size": 8,
          "learning_rate": 0.001, "label_smoothing": 0.0, "schedule": "constant", "distribute": "mirrored",
          "ema": 0.0, "flip_aligned": False}
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
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT)], capture_output=True, text=True, timeout=300, env=clean_env()
    )
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
