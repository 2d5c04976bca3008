"""Matplotlib figures: accuracy and loss curves, the confusion heatmap, and test digits as 3D voxels."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from mnist3d import GRID, NUM_CLASSES


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


# --- 3D voxel renderings of test digits ---------------------------------------------------------------------------

VOXEL_THRESHOLD = 0.1  # voxels at or below this value are left out of a rendering
VOXEL_ALPHA = 0.55
# The four corners of a unit square in the two axes across a face, wound so that (b, c, axis) is right-handed.
_SQUARE = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])


def voxel_grid(vector: np.ndarray) -> np.ndarray:
    """A flat vector (4096,) indexed x + 16y + 256z as a (16, 16, 16) grid indexed [x, y, z]."""
    return np.asarray(vector).reshape(GRID, GRID, GRID).transpose(2, 1, 0)


def voxel_faces(filled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The faces Axes3D.voxels draws for `filled` (those between a filled and an empty cell), vectorised.

    Returns the corners (F, 4, 3), wound so each normal points outwards, and each face's voxel index (F, 3).
    """
    padded = np.pad(filled, 1)
    corners, owners = [], []
    for axis in range(3):
        across = [a for a in range(3) if a != axis]
        for step in (-1, 1):
            neighbour = np.roll(padded, -step, axis=axis)[1:-1, 1:-1, 1:-1]  # the cell at index + step
            cells = np.argwhere(filled & ~neighbour)
            square = _SQUARE if step * (-1 if axis == 1 else 1) > 0 else _SQUARE[::-1]
            face = np.repeat(cells[:, None, :], 4, axis=1).astype(float)
            face[:, :, axis] += step > 0
            face[:, :, across[0]] += square[:, 0]
            face[:, :, across[1]] += square[:, 1]
            corners.append(face)
            owners.append(cells)
    return np.concatenate(corners), np.concatenate(owners)


def draw_voxels(axes, vector: np.ndarray, colormap: str, threshold: float = VOXEL_THRESHOLD) -> None:
    """Render one flat vector on a 3D axes: the voxels above `threshold`, coloured by value, semi-transparent.

    Draws what Axes3D.voxels(filled, facecolors=...) draws, as one collection instead of one per voxel:
    the same faces and shading, an order of magnitude faster.
    """
    import matplotlib
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    grid = voxel_grid(vector)
    corners, owners = voxel_faces(grid > threshold)
    colours = matplotlib.colormaps[colormap](grid[tuple(owners.T)])
    colours[:, 3] = VOXEL_ALPHA
    if len(corners):
        faces = Poly3DCollection(corners, facecolors=colours, edgecolors=(0, 0, 0, 0.15), linewidths=0.2, shade=True)
        axes.add_collection3d(faces)
    axes.set(xlim=(0, GRID), ylim=(0, GRID), zlim=(0, GRID))
    axes.set_box_aspect((1, 1, 1))
    axes.view_init(elev=15, azim=-30)  # digits are drawn in the y-z plane: from +x they read upright
    axes.set_axis_off()


def _voxel_figure(panels: int, columns: int, title: str):
    """A figure with `panels` 3D axes in rows of `columns`, and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-panels // columns)
    figure = plt.figure(figsize=(2.1 * columns, 2.3 * rows + 0.4), dpi=100)
    figure.suptitle(title, fontsize=10)
    return figure, [figure.add_subplot(rows, columns, k + 1, projection="3d") for k in range(panels)]


def _save(figure, target: str | os.PathLike) -> None:
    import matplotlib.pyplot as plt

    figure.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.85 / figure.get_figheight(), wspace=0.02, hspace=0.12)
    figure.savefig(target, format="png")
    plt.close(figure)


def sample_pairs(labels: np.ndarray) -> dict[int, int]:
    """For each class present, the first even row that holds it and has a following (rotated) odd row."""
    firsts: dict[int, int] = {}
    for row in range(0, len(labels) - 1, 2):
        firsts.setdefault(int(labels[row]), row)
    return dict(sorted(firsts.items()))


def plot_voxel_samples(
    vectors: np.ndarray,
    labels: np.ndarray,
    colormap: str,
    target: str | os.PathLike,
    threshold: float = VOXEL_THRESHOLD,
) -> None:
    """One original (even row) and its rotated copy (the next row) of each digit 0-9, as 3D voxels in one PNG."""
    pairs = sample_pairs(labels)
    figure, axes = _voxel_figure(
        2 * NUM_CLASSES, 4, f"Test digits as voxels (value > {threshold}), colormap {colormap}"
    )
    for digit in range(NUM_CLASSES):
        original, rotated = axes[2 * digit], axes[2 * digit + 1]
        if digit not in pairs:
            for panel in (original, rotated):
                panel.set_axis_off()
            original.set_title(f"digit {digit}: none in the test split", fontsize=8)
            continue
        row = pairs[digit]
        draw_voxels(original, vectors[row], colormap, threshold)
        draw_voxels(rotated, vectors[row + 1], colormap, threshold)
        original.set_title(f"digit {digit}, original", fontsize=9)
        rotated.set_title(f"digit {int(labels[row + 1])}, rotated", fontsize=9)
    _save(figure, target)


def select_misclassified(
    actual: np.ndarray, predicted: np.ndarray, count: int = 12, per_pair: int | None = 4
) -> np.ndarray:
    """Rows of wrong predictions, the most frequent (actual, predicted) pairs first, in test order within a pair.

    Takes at most `per_pair` rows of each pair (None: no limit) and `count` in all; ties between equally
    frequent pairs go to the smaller (actual, predicted).
    """
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    wrong = np.flatnonzero(actual != predicted)
    pairs, inverse, counts = np.unique(
        np.stack([actual[wrong], predicted[wrong]], axis=1), axis=0, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    chosen: list[int] = []
    for pair in sorted(range(len(pairs)), key=lambda p: (-counts[p], *pairs[p])):
        rows = wrong[inverse == pair][:per_pair]
        chosen.extend(rows[: count - len(chosen)].tolist())
        if len(chosen) >= count:
            break
    return np.array(chosen, dtype=np.int64)


def plot_misclassified(
    vectors: np.ndarray,
    actual: np.ndarray,
    predicted: np.ndarray,
    colormap: str,
    target: str | os.PathLike,
    count: int = 12,
    per_pair: int | None = 4,
    threshold: float = VOXEL_THRESHOLD,
) -> None:
    """The misclassified test samples of the most frequent confusions (select_misclassified) as 3D voxels."""
    rows = select_misclassified(actual, predicted, count, per_pair)
    limit = "" if per_pair is None else f", at most {per_pair} per pair"
    title = (
        f"Misclassified test samples ({int((np.asarray(actual) != np.asarray(predicted)).sum())} in all)\n"
        f"ranked by how often their (true, predicted) pair occurs{limit}, in test order within a pair"
    )
    figure, axes = _voxel_figure(max(len(rows), 1), 4, title)
    if len(rows) == 0:
        axes[0].set_axis_off()
        axes[0].set_title("no misclassified test samples", fontsize=9)
    for panel, row in zip(axes, rows, strict=False):
        draw_voxels(panel, vectors[row], colormap, threshold)
        panel.set_title(f"true {int(actual[row])}, predicted {int(predicted[row])}", fontsize=9)
    _save(figure, target)
