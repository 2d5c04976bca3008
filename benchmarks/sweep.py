"""The recipe search of docs/recipe.md through DVC's queue: every candidate with several training seeds, scored on
the validation split only (the test split is never read: only the train stage runs).

    python benchmarks/sweep.py queue [--threads=N] [NAME ...]  # queue candidates (default: all) in this DVC project
    dvc queue start -j 1                          # run them, one at a time (-j 2 with --threads=1 on 2 cores)
    python benchmarks/sweep.py table              # mean and spread of each candidate's validation accuracy
    python benchmarks/sweep.py tta                # the workspace's model on the validation split, 1 to 24 views

Run it in a project whose data is fetched (`dvc repro preprocess`, any source); experiments are named NAME-sSEED.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import subprocess
import sys
from collections import defaultdict

SEEDS = (42, 1)  # two training seeds for every candidate; a round's finalists may get more (EXTRA_SEEDS)
NO_JITTER = {"train.jitter_degrees": 0}  # the default before the jitter round, which its candidates changed
CANDIDATES = {
    # Round 1, from the default with no jitter (docs/recipe.md lists what each did on validation).
    "previous-default": NO_JITTER,
    "ema-0.99": {**NO_JITTER, "train.ema": 0.99},
    "flip-aligned": {**NO_JITTER, "train.flip_aligned": "true"},
    "copies-2-epochs-11": {**NO_JITTER, "train.copies_per_epoch": 2, "epochs": 11},
    "jitter-10": {"train.jitter_degrees": 10},
    "upright-1-jitter-10-epochs-12": {"train.upright_copies": 1, "train.jitter_degrees": 10, "epochs": 12},
    "jitter-20": {"train.jitter_degrees": 20},
    "jitter-10-slant-0.2": {"train.jitter_degrees": 10, "train.jitter_slant": 0.2},
    "jitter-10-copies-2-epochs-11": {"train.jitter_degrees": 10, "train.copies_per_epoch": 2, "epochs": 11},
    "block-4": {**NO_JITTER, "architectures.compact.blocks": "[[16],[32,32],[64,64],[128]]"},
    "lr-0.003": {**NO_JITTER, "train.learning_rate": 0.003},
    "head-flatten": {**NO_JITTER, "architectures.compact.head": "flatten"},
    "epochs-20-no-jitter": {**NO_JITTER, "epochs": 20},
    "batch-64": {**NO_JITTER, "train.batch_size": 64},
    # Round 2, around jitter 20.
    "jitter-30": {"train.jitter_degrees": 30},
    "jitter-20-slant-0.2": {"train.jitter_degrees": 20, "train.jitter_slant": 0.2},
    "jitter-20-lr-0.003": {"train.jitter_degrees": 20, "train.learning_rate": 0.003},
    "jitter-20-epochs-17": {"train.jitter_degrees": 20, "epochs": 17},
    # Round 3: the jitter choice again, all three on the same three seeds (paired), then the choices that were once
    # compared on the test split, re-checked on validation from the winner (the default).
    "jitter-0": NO_JITTER,
    "pool-after-norm": {"architectures.compact.pool_before_norm": "false"},
    "epochs-20": {"epochs": 20},
    "align-none": {"preprocess.align": "none"},
}
EXTRA_SEEDS = {"previous-default": (2,), "jitter-20": (2,), "jitter-0": (2,), "jitter-10": (2,)}
HALVES = ("accuracy", "accuracy_original", "accuracy_rotated")  # the whole split, then each half
VALIDATION = tuple(f"validation.{key}" for key in HALVES)  # their columns in `dvc exp show`


def dvc(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", *args], check=True, capture_output=True, text=True).stdout


def queue(names: list[str], threads: int = 0) -> None:
    """Queue NAME-sSEED for each candidate and seed, running only train (and what it needs).

    `threads` sets train.threads for all of them: with `dvc queue start -j N`, give each run its share of the cores.
    """
    for name in names or CANDIDATES:
        for seed in SEEDS + EXTRA_SEEDS.get(name, ()):
            settings = {"train.seed": seed, "train.threads": threads, **CANDIDATES[name]}
            overrides = [f"{key}={value}" for key, value in settings.items()]
            dvc(
                "exp",
                "run",
                "--queue",
                "-n",
                f"{name}-s{seed}",
                *(arg for o in overrides for arg in ("-S", o)),
                "train",
            )
            print(f"queued {name}-s{seed}: {' '.join(overrides)}")


def train_minutes(experiment: str) -> float | None:
    """Training minutes of a queued run, summed from the per-epoch lines Keras wrote in its log."""
    try:
        log = dvc("queue", "logs", experiment)
    except subprocess.CalledProcessError:
        return None
    return sum(int(s) for s in re.findall(r"^\d+/\d+ - (\d+)s - ", log, re.MULTILINE)) / 60 or None


def table() -> str:
    """One Markdown row per candidate: seeds, mean and range of each validation figure, training minutes."""
    runs = defaultdict(list)
    for row in csv.DictReader(io.StringIO(dvc("exp", "show", "--csv", "--no-fetch", "--all-commits"))):
        match = re.fullmatch(r"(.+)-s(\d+)", row["Experiment"] or "")
        if match and row.get(VALIDATION[0]) not in (None, "", "!"):
            runs[match[1]].append((row, train_minutes(row["Experiment"])))
    lines = [
        "| candidate | seeds | validation (range) | original half | rotated half | train min |",
        "|---|---|---|---|---|---|",
    ]
    order = {name: place for place, name in enumerate(CANDIDATES)}  # then any other NAME-sSEED, by name
    for name, rows in sorted(runs.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
        cells = []
        for key in VALIDATION:
            values = [float(row[key]) for row, _ in rows]
            cells.append(
                f"{statistics.mean(values):.4f}"
                + (f" ({min(values):.4f}-{max(values):.4f})" if key == VALIDATION[0] else "")
            )
        minutes = [m for _, m in rows if m]
        lines.append(
            f"| {name} | {len(rows)} | {' | '.join(cells)} | {statistics.mean(minutes):.1f} |"
            if minutes
            else f"| {name} | {len(rows)} | {' | '.join(cells)} | |"
        )
    return "\n".join(lines)


def tta_table(views: tuple[int, ...] = (1, 2, 4, 8, 24)) -> str:
    """The workspace's trained model on its own validation split, its predictions averaged over cube rotations."""
    sys.path.insert(0, "")  # the project's mnist3d, from the project root
    from mnist3d.evaluate.tta import predict_with_views
    from mnist3d.io.processed import read_processed
    from mnist3d.metrics import evaluate_predictions
    from mnist3d.params import load_section
    from mnist3d.train.model import load_model
    from mnist3d.train.split import split_pairs

    train = load_section("train")
    x, y = read_processed("data/processed/train.npz")
    _, rows = split_pairs(len(y), train["validation_split"], train["seed"])
    model = load_model("models/model.keras")
    lines = ["| views | validation | original half | rotated half |", "|---|---|---|---|"]
    for count in views:
        scores = evaluate_predictions(y[rows], predict_with_views(model, x[rows], count, 256, "models/model.keras"))
        lines.append(f"| {count} | " + " | ".join(f"{scores[key]:.4f}" for key in HALVES) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["queue"]:
        threads = [arg for arg in sys.argv[2:] if arg.startswith("--threads=")]
        queue([arg for arg in sys.argv[2:] if arg not in threads], int(threads[0].split("=")[1]) if threads else 0)
    elif sys.argv[1:2] == ["table"]:
        print(table())
    elif sys.argv[1:2] == ["tta"]:
        print(tta_table())
    else:
        sys.exit(__doc__)
