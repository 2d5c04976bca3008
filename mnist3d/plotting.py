"""Matplotlib figures: the notebook's accuracy curves, loss curves and the confusion heatmap."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np


def read_series(live_dir: str | os.PathLike, split: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values that DVCLive logged for `split` (train or eval) and `metric` (accuracy, loss)."""
    path = Path(live_dir, "plots", "metrics", split, f"{metric}.tsv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return np.array([int(r["step"]) + 1 for r in rows]), np.array([float(r[metric]) for r in rows])


def plot_curves(live_dir: str | os.PathLike, metric: str, target: str | os.PathLike) -> None:
    """Train and validation `metric` per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for split, label in (("train", "train"), ("eval", "validation")):
        epochs, values = read_series(live_dir, split, metric)
        axes.plot(epochs, values, marker="o", markersize=3, label=label)
    axes.set(xlabel="epoch", ylabel=metric, title=f"Model {metric}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(target, format="png")
    plt.close(figure)


def plot_confusion(matrix: np.ndarray, target: str | os.PathLike) -> None:
    """A heatmap of the confusion matrix with counts, rows actual and columns predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5.2), dpi=120)
    image = axes.imshow(matrix, cmap="Oranges")
    labels = range(len(matrix))
    axes.set(xticks=labels, yticks=labels, xlabel="predicted", ylabel="actual", title="Test confusion matrix")
    threshold = matrix.max() / 2
    for row in labels:
        for col in labels:
            axes.text(
                col,
                row,
                matrix[row, col],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[row, col] > threshold else "black",
            )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(target, format="png")
    plt.close(figure)
