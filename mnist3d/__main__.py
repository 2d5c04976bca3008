"""Command line: python -m mnist3d predict INPUT [--row N] [--split test] [--csv OUT] [--model PATH]."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist3d.errors import printable, run_stage
from mnist3d.evaluate.predict import DEFAULT_MODEL, predict_file
from mnist3d.io.schema import SPLITS
from mnist3d.params import PARAMS_FILE


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m mnist3d", description="3D MNIST tools; run from the project root.")
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="classify samples with the trained model",
        description=(
            "Print the predicted digit and the top-3 probabilities of each sample. INPUT is a vectors .h5 "
            "(Kaggle schema), a point-cloud .h5, a point cloud (.npy N x 3, .txt/.csv/.xyz, .ply) or voxel grids "
            "(.npy (16,16,16), (4096,), (N,16,16,16) or (N,4096), values in [0, 1]). Inputs go through the same "
            "preprocessing as training, with params.yaml's preprocess section."
        ),
    )
    predict.add_argument("input", type=Path, help="the file to classify")
    predict.add_argument("--row", type=int, help="classify only this row (0-based); default: every row")
    predict.add_argument("--split", choices=SPLITS, default="test", help="the split of a vectors .h5 (default: test)")
    predict.add_argument("--csv", type=Path, metavar="OUT", help="also write the predictions to this CSV file")
    predict.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"default: {DEFAULT_MODEL}")
    predict.add_argument("--params", type=Path, default=PARAMS_FILE, help=f"default: {PARAMS_FILE}")
    return cli


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    def predict() -> None:
        for line in predict_file(args.input, args.model, args.split, args.row, args.csv, args.params):
            print(printable(line))  # the input's name is in the lines, and a name may hold anything

    run_stage(predict, "python -m mnist3d predict")


if __name__ == "__main__":
    main()
