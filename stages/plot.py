"""Stage plot: accuracy and loss curves and the confusion heatmap as PNGs under plots/."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/plot.py

import numpy as np

from mnist3d.errors import PipelineError, run_stage
from mnist3d.files import atomic_path
from mnist3d.metrics import confusion_matrix
from mnist3d.plotting import plot_confusion, plot_curves

LIVE = Path("metrics/live")
CONFUSION = Path("metrics/confusion.json")
PLOTS = Path("plots")


def main() -> None:
    try:
        rows = json.loads(CONFUSION.read_text())
        actual, predicted = (np.array([r[k] for r in rows]) for k in ("actual", "predicted"))
    except (OSError, ValueError, KeyError, TypeError):
        raise PipelineError(f"{CONFUSION} is missing or damaged; run: dvc repro evaluate") from None
    with atomic_path(PLOTS, directory=True) as folder:
        try:
            plot_curves(LIVE, "accuracy", folder / "accuracy.png")
            plot_curves(LIVE, "loss", folder / "loss.png")
        except (OSError, ValueError, KeyError):
            raise PipelineError(f"training curves under {LIVE} are missing or damaged; run: dvc repro train") from None
        plot_confusion(confusion_matrix(actual, predicted), folder / "confusion.png")
    print(f"plot: wrote {', '.join(sorted(p.name for p in PLOTS.iterdir()))} to {PLOTS}/")


if __name__ == "__main__":
    run_stage(main)
