"""Stage plot: accuracy and loss curves, the confusion heatmap and test digits as 3D voxels, as PNGs under plots/."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/plot.py

import numpy as np

from mnist3d.errors import PipelineError, run_stage
from mnist3d.evaluate.plotting import plot_confusion, plot_curves, plot_misclassified, plot_voxel_samples
from mnist3d.io.files import atomic_path, check_writable
from mnist3d.io.readers import read_vectors
from mnist3d.io.schema import VECTORS_FILE
from mnist3d.metrics import confusion_matrix
from mnist3d.params import load_section

LIVE = Path("metrics/live")
CONFUSION = Path("metrics/confusion.json")
VECTORS = Path("data/raw") / VECTORS_FILE
PLOTS = Path("plots")


def main() -> None:
    colormap = load_section("preprocess")["colormap"]
    check_writable(PLOTS, directory=True)  # before the reading, not after it
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
        test = read_vectors(VECTORS)["test"]
        if not np.array_equal(test.y, actual):
            raise PipelineError(
                f"{CONFUSION} does not match the test split of {VECTORS} ({len(actual)} rows against "
                f"{len(test.y)}); run: dvc repro evaluate"
            )
        plot_voxel_samples(test.x, test.y, colormap, folder / "samples.png")
        plot_misclassified(test.x, actual, predicted, colormap, folder / "misclassified.png")
    print(f"plot: wrote {', '.join(sorted(p.name for p in PLOTS.iterdir()))} to {PLOTS}/")


if __name__ == "__main__":
    run_stage(main)
