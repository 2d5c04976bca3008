"""The curves (DVCLive) and metrics/train.json, written every epoch where DVC looks, so a run can be watched live.

Importing this module loads TensorFlow: import it after the params checks.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from mnist3d.io.files import write_json


class EpochOutputs(keras.callbacks.Callback):
    """Clears the last run's curves and summary when training starts, then adds to both after every epoch.

    DVC deletes a stage's outputs before running it and never records a killed run, so half a set of curves is never
    taken for a result; run by hand, the first epoch still never mixes with an older run's.
    """

    def __init__(self, live_dir: str | Path, metrics_path: str | Path, details: dict[str, Any] | None = None):
        super().__init__()
        self.live_dir, self.metrics_path = Path(live_dir), Path(metrics_path)
        self.history: dict[str, list[float]] = {}
        self.details = dict(details or {})  # written into the summary beside the history's figures
        self.curves: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._remove()  # only now: a run that fails its checks before training keeps the last run's outputs
        live = Live(str(self.live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        self.curves = DVCLiveCallback(live=live)
        self.curves.set_model(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.curves.on_epoch_end(epoch, logs)  # one row per curve, appended to its .tsv
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.write_summary()

    def write_summary(self) -> None:
        """metrics/train.json from the epochs so far and the details; atomic, so a reader never sees half a file."""
        write_json(self.metrics_path, {**summarise_history(self.history), **self.details})

    def on_train_end(self, logs: dict | None = None) -> None:
        self.curves.on_train_end(logs)

    def abandon(self) -> None:
        """After a failed run, leave no partial curves or summary: a failure writes nothing (only a kill can)."""
        if self.curves is not None:
            self._remove()
            with contextlib.suppress(OSError):  # and no folder that only they were in
                self.live_dir.parent.rmdir()

    def _remove(self) -> None:
        shutil.rmtree(self.live_dir, ignore_errors=True)
        self.metrics_path.unlink(missing_ok=True)


def summarise_history(history: dict[str, list[float]]) -> dict[str, Any]:
    """What a sweep compares: epochs run, the last validation accuracy and loss, the epoch of the best accuracy."""
    best = int(np.argmax(history["val_accuracy"]))
    return {
        "epochs": len(history["val_accuracy"]),
        "final": {"val_accuracy": float(history["val_accuracy"][-1]), "val_loss": float(history["val_loss"][-1])},
        "best": {"epoch": best + 1, "val_accuracy": float(history["val_accuracy"][best])},
    }
