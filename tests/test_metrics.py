"""Test metrics on hand-computed predictions."""

import numpy as np
import pytest

from mnist3d.metrics import (
    confusion_matrix,
    confusion_rows,
    cross_entropy,
    evaluate_predictions,
    macro_f1,
    per_class_rows,
)


def one_hot(labels, confidence=0.9):
    probabilities = np.full((len(labels), 10), (1 - confidence) / 9)
    probabilities[np.arange(len(labels)), labels] = confidence
    return probabilities


def test_halves_split_even_original_and_odd_rotated_rows():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 5, 1, 1, 2, 7])  # originals all right, rotated 1 of 3 right
    metrics = evaluate_predictions(y_true, one_hot(y_pred))
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["accuracy_original"] == 1.0
    assert metrics["accuracy_rotated"] == pytest.approx(1 / 3)
    assert metrics["samples"] == 6
    # the headline only: what dvc exp show lists as columns
    assert set(metrics) == {"accuracy", "loss", "macro_f1", "accuracy_original", "accuracy_rotated", "samples"}


def test_per_class_rows_give_each_present_digit_its_accuracy():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 5, 1, 1, 1, 2, 7, 7, 2])
    assert per_class_rows(y_true, y_pred) == [  # digits 3 to 9 are absent from this test set: no row
        {"digit": "0", "accuracy": 0.5, "samples": 2},
        {"digit": "1", "accuracy": 1.0, "samples": 3},
        {"digit": "2", "accuracy": 0.5, "samples": 4},
    ]


def test_macro_f1_by_hand():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    # class 0: p=1, r=.5, f1=2/3; class 1: p=2/3, r=1, f1=.8; other classes absent -> 0
    assert macro_f1(confusion_matrix(y_true, y_pred)) == pytest.approx((2 / 3 + 0.8) / 10)


def test_cross_entropy_clips_like_keras():
    probabilities = np.zeros((1, 10))
    probabilities[0, 3] = 1.0
    assert cross_entropy(np.array([3]), probabilities) == pytest.approx(0.0)
    assert cross_entropy(np.array([4]), probabilities) == pytest.approx(-np.log(1e-7))


def test_confusion_rows_and_matrix_agree():
    y_true, y_pred = np.array([1, 2, 2]), np.array([1, 2, 3])
    assert confusion_rows(y_true, y_pred) == [
        {"actual": 1, "predicted": 1},
        {"actual": 2, "predicted": 2},
        {"actual": 2, "predicted": 3},
    ]
    matrix = confusion_matrix(y_true, y_pred)
    assert matrix.sum() == 3 and matrix[2, 3] == 1 and matrix[1, 1] == 1
