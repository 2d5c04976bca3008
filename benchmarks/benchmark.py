"""Benchmark the seed recipe against the default params on the same data, in one run.

    python benchmarks/benchmark.py --data ../shared/data/3d-mnist-dev.zip          # full (about 25 minutes)
    python benchmarks/benchmark.py --data ../shared/data/3d-mnist-dev.zip --quick  # a few minutes

It prints a table (test accuracy overall and per half, training wall time, samples/s, achieved
GFLOP/s against a measured matmul peak, evaluation time) and the preprocess timings, and writes
them to --out as Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from mnist3d.colour import colour_voxels  # noqa: E402
from mnist3d.sources import copy_local  # noqa: E402
from mnist3d.vectors import CLOUD_FILES, VECTORS_FILE, read_processed, read_vectors, write_processed  # noqa: E402

# The Colab notebook's recipe: its model, plain Adam at 1e-3, no augmentation, 50 epochs, no test-time views.
SEED_RECIPE = {
    "model": "seed",
    "epochs": 50,
    "preprocess": {"align": "none"},
    "train": {
        "augment": "none",
        "label_smoothing": 0.0,
        "schedule": "constant",
        "learning_rate": 0.001,
        "batch_size": 128,
    },
    "evaluate": {"tta_views": 1},
}


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """The best float32 matmul rate TensorFlow reaches here, in GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    tf.linalg.matmul(a, a).numpy()  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def seed_colour_loop(x: np.ndarray, colormap: str) -> np.ndarray:
    """The notebook's colour step: a ScalarMappable per sample."""
    from matplotlib.cm import ScalarMappable

    return np.asarray(
        [ScalarMappable(cmap=colormap).to_rgba(row)[:, :-1].reshape(16, 16, 16, 3) for row in x], dtype=np.float32
    )


def best_of(repeats: int, work) -> tuple[float, object]:
    """The fastest of `repeats` timed runs of `work()`, and its result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def time_preprocess(vectors: Path, scratch: Path, preprocess: dict) -> dict[str, float]:
    """The colour step against the notebook's loop, and the preprocess stage's work against plain I/O.

    The stage's work is reading and checking the h5, building the network inputs (colour, and alignment
    when on) and writing the NPZ files; the plain baseline reads the same h5 datasets and writes the same
    arrays' bytes uncompressed. Each is the best of 3 runs, so both see a warm page cache.
    """
    import h5py

    from mnist3d.inputs import network_input_blocks

    def stage() -> None:  # what stages/preprocess.py does, minus the params and the temp-folder rename
        for name, split in read_vectors(vectors).items():
            blocks = network_input_blocks(split.x, preprocess["colormap"], preprocess["align"])
            write_processed(scratch / f"{name}.npz", blocks, split.y)

    def plain(outputs: dict) -> None:
        with h5py.File(vectors, "r") as h5:
            {key: h5[key][:] for key in h5}
        for name, (x, y) in outputs.items():
            with open(scratch / f"plain_{name}.bin", "wb") as handle:
                x.tofile(handle)
                y.tofile(handle)

    stage_s, _ = best_of(3, stage)
    outputs = {name: read_processed(scratch / f"{name}.npz") for name in ("train", "test")}
    plain_s, _ = best_of(3, lambda: plain(outputs))
    test_x = read_vectors(vectors)["test"].x
    loop_s, seed_rgb = best_of(3, lambda: seed_colour_loop(test_x, preprocess["colormap"]))
    fast_s, fast_rgb = best_of(3, lambda: colour_voxels(test_x, preprocess["colormap"]))
    assert np.array_equal(seed_rgb, fast_rgb), "the vectorised colour step must match the notebook's exactly"
    return {
        "stage_s": stage_s,
        "plain_s": plain_s,
        "align": preprocess["align"],
        "loop_ms": 1e3 * loop_s / len(test_x),
        "fast_ms": 1e3 * fast_s / len(test_x),
        "samples": len(test_x),
    }


def merged(params: dict, recipe: dict) -> dict:
    """params.yaml with a recipe's keys laid over it (sections merge, top-level keys replace)."""
    out = yaml.safe_load(yaml.safe_dump(params))
    for key, value in recipe.items():
        if isinstance(value, dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def run_recipe(name: str, params: dict, splits: dict, clouds: Path, peak: float) -> dict:
    """Preprocess, train and evaluate one recipe; returns its row of the table."""
    from mnist3d.augment import predict_with_views
    from mnist3d.inputs import network_inputs
    from mnist3d.metrics import evaluate_predictions
    from mnist3d.model import forward_flops
    from mnist3d.training import fit

    colormap, aligned = params["preprocess"]["colormap"], params["preprocess"]["align"]
    data = {
        "x_train": network_inputs(splits["train"].x, colormap, aligned),
        "y_train": splits["train"].y,
        "x_test": network_inputs(splits["test"].x, colormap, aligned),
        "y_test": splits["test"].y,
    }

    architecture = params["architectures"][params["model"]]
    print(f"\n== {name}: model={params['model']} epochs={params['epochs']} {params['train']}", flush=True)
    start = time.perf_counter()
    model, history = fit(
        data["x_train"],
        data["y_train"],
        params["train"],
        architecture,
        params["epochs"],
        clouds,
        params["preprocess"],
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    views = params["evaluate"]["tta_views"]
    probabilities = predict_with_views(model, data["x_test"], views, params["evaluate"]["batch_size"])
    eval_s = time.perf_counter() - start
    metrics = evaluate_predictions(data["y_test"], probabilities)
    # Samples seen in training: every epoch's batches (fixed and fresh) plus the validation pass.
    validation = round(len(data["y_train"]) // 2 * params["train"]["validation_split"]) * 2
    per_epoch = len(data["y_train"]) - validation
    if params["train"]["augment"] != "none":
        per_epoch += per_epoch // 2 * params["train"]["copies_per_epoch"]
    samples = params["epochs"] * per_epoch
    flops = forward_flops(model)
    achieved = (3 * flops * samples + flops * validation * params["epochs"]) / train_s / 1e9
    return {
        "recipe": name,
        "params": f"{model.count_params():,}",
        "accuracy": metrics["accuracy"],
        "original": metrics["accuracy_original"],
        "rotated": metrics["accuracy_rotated"],
        "epochs": len(history["loss"]),
        "train_s": train_s,
        "samples_s": samples / train_s,
        "gflops": achieved,
        "peak_pct": 100 * achieved / peak,
        "eval_s": eval_s,
        "views": views,
    }


def table(rows: list[dict], prep: dict, peak: float, data_name: str, sizes: str) -> str:
    """The results as Markdown."""
    lines = [
        f"Data: {data_name} ({sizes}). Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; matmul peak {peak:.0f} GFLOP/s (TF float32).",
        "",
        "| recipe | params | test acc | original half | rotated half | epochs | train wall | samples/s "
        "| GFLOP/s (% of peak) | eval wall (views) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['params']} | {r['accuracy']:.4f} | {r['original']:.4f} | {r['rotated']:.4f} "
            f"| {r['epochs']} | {r['train_s']:.0f} s | {r['samples_s']:.0f} | {r['gflops']:.1f} ({r['peak_pct']:.0f} %) "
            f"| {r['eval_s']:.1f} s ({r['views']}) |"
        )
    lines += [
        "",
        f"Colour step on {prep['samples']} test vectors: notebook loop {prep['loop_ms']:.3f} ms/sample, "
        f"vectorised {prep['fast_ms']:.4f} ms/sample ({prep['loop_ms'] / prep['fast_ms']:.0f}x faster, identical values).",
        f"Preprocess stage work with align={prep['align']} (read and check the h5, colour and align, write NPZ): "
        f"{prep['stage_s']:.1f} s; plainly reading the h5 and writing the same bytes uncompressed: "
        f"{prep['plain_s']:.1f} s ({prep['stage_s'] / prep['plain_s']:.2f}x). Timings are the best of 3 runs.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(ROOT.parent / "shared/data/3d-mnist-dev.zip"),
        help="a 3D MNIST zip, folder or vectors .h5 (default: the shared dev zip)",
    )
    parser.add_argument("--quick", action="store_true", help="2,400 train / 800 test vectors and 6 epochs per recipe")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results.md"), help="where to write the table")
    args = parser.parse_args()

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    recipes = {"seed": merged(params, SEED_RECIPE), "default": params}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        copy_local(Path(args.data).expanduser(), scratch)
        prep = time_preprocess(scratch / VECTORS_FILE, scratch, params["preprocess"])
        splits = read_vectors(scratch / VECTORS_FILE)
        clouds = scratch / CLOUD_FILES["train"]
        if args.quick:
            splits["train"].x, splits["train"].y = splits["train"].x[:2400], splits["train"].y[:2400]
            splits["test"].x, splits["test"].y = splits["test"].x[:800], splits["test"].y[:800]
            for recipe in recipes.values():
                recipe["epochs"] = 6
            if clouds.exists():  # keep the clouds paired with the kept rows
                import h5py

                with h5py.File(clouds, "r") as full, h5py.File(scratch / "quick_clouds.h5", "w") as part:
                    for index in range(1200):
                        full.copy(full[str(index)], part, name=str(index))
                clouds = scratch / "quick_clouds.h5"
        peak = matmul_peak()
        rows = [run_recipe(name, recipe, splits, clouds, peak) for name, recipe in recipes.items()]
    sizes = f"{len(splits['train'].y)} train / {len(splits['test'].y)} test vectors" + (
        ", --quick" if args.quick else ""
    )
    report = table(rows, prep, peak, Path(args.data).name, sizes)
    Path(args.out).write_text(report)
    print("\n" + report)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
