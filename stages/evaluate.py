"""Stage evaluate: headline metrics/evaluate.json, per-digit metrics/per_class.json, rows metrics/confusion.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/evaluate.py

from mnist3d.errors import run_stage
from mnist3d.io.files import write_json
from mnist3d.params import load_section

PROCESSED_TEST = Path("data/processed/test.npz")
MODEL = Path("models/model.keras")
METRICS = Path("metrics/evaluate.json")
CONFUSION = Path("metrics/confusion.json")
PER_CLASS = Path("metrics/per_class.json")  # a plot, not a metric: ten more columns would crowd dvc exp show


def main() -> None:
    params = load_section("evaluate")

    from mnist3d.evaluate.tta import predict_with_views
    from mnist3d.io.processed import read_processed
    from mnist3d.metrics import confusion_rows, evaluate_predictions, per_class_rows
    from mnist3d.train.model import check_model_inputs, load_model

    x, y = read_processed(PROCESSED_TEST)
    model = load_model(MODEL)
    check_model_inputs(
        model,
        MODEL,
        x.shape[1:],
        str(PROCESSED_TEST),
        "the model and the data come from different params, run: dvc repro",
    )
    probabilities = predict_with_views(model, x, params["tta_views"], params["batch_size"])
    metrics = evaluate_predictions(y, probabilities)
    predicted = probabilities.argmax(axis=1)
    write_json(CONFUSION, confusion_rows(y, predicted))
    write_json(PER_CLASS, per_class_rows(y, predicted))
    write_json(METRICS, metrics)
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f} "
        f"(original {metrics['accuracy_original']:.4f}, rotated {metrics['accuracy_rotated']:.4f}), "
        f"macro F1 {metrics['macro_f1']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
