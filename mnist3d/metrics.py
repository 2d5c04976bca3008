"""Test-set metrics from predicted probabilities: accuracy, loss, macro F1 and per half; per-class rows apart."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist3d import NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts (actual, predicted) as a 10x10 integer matrix."""
    return np.bincount(y_true * NUM_CLASSES + y_pred, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def macro_f1(matrix: np.ndarray) -> float:
    """The unweighted mean of per-class F1; a class never predicted nor present scores 0."""
    hits = np.diag(matrix).astype(float)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)
    return float(np.mean(np.divide(2 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)))


def cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean categorical cross-entropy, with Keras's clipping of probabilities to [1e-7, 1]."""
    picked = np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def evaluate_predictions(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """The headline test metrics; even rows are the dataset's originals and odd rows their rotated copies."""
    y_pred = probabilities.argmax(axis=1)
    correct = y_pred == y_true
    return {
        "accuracy": float(correct.mean()),
        "loss": cross_entropy(y_true, probabilities),
        "macro_f1": macro_f1(confusion_matrix(y_true, y_pred)),
        "accuracy_original": float(correct[0::2].mean()),
        "accuracy_rotated": float(correct[1::2].mean()) if len(correct) > 1 else None,
        "samples": len(y_true),
    }


def per_class_rows(y_true: np.ndarray, y_pred: np.ndarray) -> list[dict[str, Any]]:
    """One {digit, accuracy, samples} row per digit in the test set, for DVC's bar chart template."""
    return [
        {"digit": str(digit), "accuracy": float((y_pred[y_true == digit] == digit).mean()), "samples": int(count)}
        for digit, count in enumerate(np.bincount(y_true, minlength=NUM_CLASSES))
        if count
    ]


def confusion_rows(y_true: np.ndarray, y_pred: np.ndarray) -> list[dict[str, int]]:
    """One {actual, predicted} row per sample, for DVC's confusion template."""
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(y_true, y_pred, strict=True)]
