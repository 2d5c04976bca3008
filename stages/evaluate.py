"""Stage evaluate: headline metrics/evaluate.json, per-digit metrics/per_class.json, rows metrics/confusion.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/evaluate.py

from mnist3d.errors import run_stage
from mnist3d.io.files import check_writable, write_json_files
from mnist3d.params import load_section
from mnist3d.runtime import prepare_tensorflow

PROCESSED_TEST = Path("data/processed/test.npz")
MODEL = Path("models/model.keras")
METRICS = Path("metrics/evaluate.json")
CONFUSION = Path("metrics/confusion.json")
PER_CLASS = Path("metrics/per_class.json")  # a plot, not a metric: ten more columns would crowd dvc exp show
OUTPUTS = (METRICS, CONFUSION, PER_CLASS)


def main() -> None:
    params = load_section("evaluate")
    for output in OUTPUTS:
        check_writable(output)  # before the model loads: a failure here costs nothing
    prepare_tensorflow()

    from mnist3d.evaluate.tta import predict_with_views
    from mnist3d.io.processed import read_processed
    from mnist3d.metrics import confusion_rows, evaluate_predictions, per_class_rows
    from mnist3d.train.model import check_model_inputs, load_trained

    x, y = read_processed(PROCESSED_TEST)
    model, built_with = load_trained(MODEL)  # the views to average over are the ones the model was saved with
    check_model_inputs(
        model,
        MODEL,
        x.shape[1:],
        str(PROCESSED_TEST),
        "the model and the data come from different params, run: dvc repro",
    )
    probabilities = predict_with_views(model, x, built_with.tta_views, params["batch_size"], MODEL)
    metrics = evaluate_predictions(y, probabilities)
    predicted = probabilities.argmax(axis=1)
    write_json_files(  # all three or none
        {CONFUSION: confusion_rows(y, predicted), PER_CLASS: per_class_rows(y, predicted), METRICS: metrics}
    )
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f} "
        f"(original {metrics['accuracy_original']:.4f}, rotated {metrics['accuracy_rotated']:.4f}), "
        f"macro F1 {metrics['macro_f1']:.4f}, {built_with.tta_views} view(s)"
    )


if __name__ == "__main__":
    run_stage(main)
