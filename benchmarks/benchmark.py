"""Time-to-accuracy: the notebook's recipe against the default params, each run through the real pipeline, in one run.

    python benchmarks/benchmark.py                      # on what the pipeline fetched (data/raw)
    python benchmarks/benchmark.py --data 3d-mnist.zip  # any 3D MNIST zip, folder or vectors .h5
    python benchmarks/benchmark.py --quick              # 2,400 / 800 vectors and 6 epochs: a few minutes
    python benchmarks/benchmark.py --preprocess         # only the preprocess stage, run 5 times: a minute

Each recipe runs in its own scratch git + DVC copy of the project with the local source pointed at the data,
stage by stage (`dvc repro -s` fetch, preprocess, train, evaluate), so the wall times are what `dvc exp run`
costs. Then the default's training epoch is taken apart: forward and backward compute, the fresh-copy maker,
the input pipeline, validation and stage start-up. Everything is printed and written to --out as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

STAGES = ("fetch", "preprocess", "train", "evaluate")
PROJECT_FILES = ["dvc.yaml", "params.yaml", "mnist3d", "stages", ".dvc/config", ".dvcignore", ".gitignore"]
# The Colab notebook's recipe, as the README's seed baseline command sets it.
SEED_RECIPE = {
    "model": "seed",
    "epochs": 50,
    "preprocess.align": "none",
    "train.augment": "none",
    "train.label_smoothing": 0.0,
    "train.schedule": "constant",
    "train.learning_rate": 0.001,
}


def set_param(params: dict, dotted: str, value) -> None:
    *sections, key = dotted.split(".")
    for name in sections:
        params = params[name]
    params[key] = value


def make_project(folder: Path, data: Path, overrides: dict) -> Path:
    """A committed git + DVC copy of the project whose local source reads `data`, with `overrides` applied."""
    for name in PROJECT_FILES:
        source, target = ROOT / name, folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for dotted, value in {"data.source": "local", "data.path": str(data), **overrides}.items():
        set_param(params, dotted, value)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)
    return folder


def run_pipeline(project: Path) -> dict:
    """Run fetch through evaluate with DVC, one stage at a time; wall seconds per stage and the metrics."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    seconds = {}
    for stage in STAGES:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "-s", stage], cwd=project, env=env, capture_output=True, text=True
        )
        seconds[stage] = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"{project.name}: dvc repro -s {stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        print(f"  {stage}: {seconds[stage]:.1f} s", flush=True)
    return {
        "seconds": seconds,
        "evaluate": json.loads((project / "metrics/evaluate.json").read_text()),
        "train": json.loads((project / "metrics/train.json").read_text()),
        "params": yaml.safe_load((project / "params.yaml").read_text()),
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


def fastest_in_turns(repeats: int, *works) -> list[float]:
    """The fastest of `repeats` timed runs of each work, run in turns so that each meets the same machine."""
    best = [float("inf")] * len(works)
    for _ in range(repeats):
        for index, work in enumerate(works):
            start = time.perf_counter()
            work()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def fastest(repeats: int, work) -> float:
    """The fastest of `repeats` timed calls of `work`, in seconds."""
    return fastest_in_turns(repeats, work)[0]


def time_preprocess(vectors: Path, scratch: Path, preprocess: dict) -> dict[str, float]:
    """The preprocess stage's work (read and check the h5, colour, align, write the NPZ files) against plain I/O.

    The plain baseline reads the same h5 datasets and writes the same arrays' bytes; fastest of 3 runs in turns.
    """
    import h5py

    from mnist3d.inputs import write_network_inputs
    from mnist3d.readers import read_vectors

    def stage() -> None:  # what stages/preprocess.py does, minus the params and the temp-folder rename
        for name, split in read_vectors(vectors).items():
            write_network_inputs(scratch / f"{name}.npz", split, preprocess["colormap"], preprocess["align"])

    def plain() -> None:
        with h5py.File(vectors, "r") as h5:
            arrays = {key: h5[key][:] for key in h5}
        for name in ("train", "test"):
            rows = len(arrays[f"y_{name}"])
            channels = 3 if preprocess["align"] == "none" else 6
            np.empty((rows, 16, 16, 16, channels), np.float32).tofile(scratch / f"plain_{name}.bin")

    stage_s, plain_s = fastest_in_turns(3, stage, plain)
    return {"stage_s": stage_s, "plain_s": plain_s, "align": preprocess["align"]}


def epoch_breakdown(project: Path) -> dict:
    """One training epoch of the recipe in `project`, taken apart; seconds each, and the model's forward FLOPs.

    Every part runs alone on the same data the pipeline trained on: the compute on batches already in memory,
    the fresh-copy maker without training beside it, the input pipeline with its fresh copies made beforehand.
    """
    from mnist3d.errors import quiet_native_stderr
    from mnist3d.model import build_model, forward_flops
    from mnist3d.vectors import read_processed

    with quiet_native_stderr():  # TensorFlow's C++ start-up lines
        from mnist3d.training import EpochBatches, compile_model, fresh_copies, make_dataset, split_pairs

        make_dataset(np.zeros((1, 1)), np.zeros(1, np.int64), 1)  # touches the devices, which logs more

    params = yaml.safe_load((project / "params.yaml").read_text())
    train = params["train"]
    architecture = params["architectures"][params["model"]]
    clouds = project / "data/raw/train_point_clouds.h5"
    start = time.perf_counter()
    x, y = read_processed(project / "data/processed/train.npz")
    read_npz_s = time.perf_counter() - start
    train_rows, val_rows = split_pairs(len(y), train["validation_split"], train["seed"])
    start = time.perf_counter()
    make_fresh, fresh_labels = fresh_copies(
        train["augment"], x, y, train_rows, clouds, params["preprocess"], train["copies_per_epoch"]
    )
    read_clouds_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    fresh_s, fresh = 0.0, None
    if make_fresh:
        fresh_s = fastest(2, lambda: make_fresh(rng))
        fresh = make_fresh(rng)
    batches = EpochBatches(
        x[train_rows], y[train_rows], train["batch_size"], train["seed"], make_fresh and (lambda _: fresh), fresh_labels
    )
    pipeline = batches.dataset()
    pipeline_s = fastest(2, lambda: sum(1 for _ in pipeline))

    model = build_model(architecture, input_shape=x.shape[1:])
    compile_model(model, train["learning_rate"], train["label_smoothing"], train["schedule"], 10 * batches.steps())
    epoch_x = np.concatenate([x[train_rows], fresh]) if fresh is not None else x[train_rows]
    epoch_y = np.concatenate([y[train_rows], fresh_labels]) if fresh is not None else y[train_rows]
    in_memory = make_dataset(epoch_x, epoch_y, train["batch_size"]).cache()
    model.fit(in_memory, epochs=1, verbose=0, shuffle=False)  # builds the graph and fills the cache
    compute_s = fastest(2, lambda: model.fit(in_memory, epochs=1, verbose=0, shuffle=False))
    validation = make_dataset(x[val_rows], y[val_rows], train["batch_size"]).cache()
    model.evaluate(validation, verbose=0)
    validation_s = fastest(2, lambda: model.evaluate(validation, verbose=0))
    return {
        "compute_s": compute_s,
        "fresh_s": fresh_s,
        "pipeline_s": pipeline_s,
        "validation_s": validation_s,
        "read_clouds_s": read_clouds_s,
        "read_npz_s": read_npz_s,
        "samples": len(epoch_y),
        "validation_samples": len(val_rows),
        "forward_flops": forward_flops(model),
    }


def tensorflow_import_s() -> float:
    """Seconds a fresh interpreter takes to import TensorFlow and Keras (fastest of 3)."""
    command = [sys.executable, "-c", "import tensorflow, keras"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return fastest(3, lambda: subprocess.run(command, env=env, capture_output=True, check=True))


def subset(data: Path, folder: Path, train_rows: int, test_rows: int) -> Path:
    """A smaller copy of the dataset files for --quick: the first rows of each split and their clouds."""
    import h5py

    from mnist3d.sources import copy_local
    from mnist3d.vectors import CLOUD_FILES, VECTORS_FILE

    full, small = folder / "full", folder / "quick"
    full.mkdir()
    small.mkdir()
    copy_local(data, full)
    rows = {"train": train_rows, "test": test_rows}
    with h5py.File(full / VECTORS_FILE, "r") as source, h5py.File(small / VECTORS_FILE, "w") as target:
        for split, count in rows.items():
            for key in (f"X_{split}", f"y_{split}"):
                target.create_dataset(key, data=source[key][:count])
    for split, name in CLOUD_FILES.items():
        if (full / name).exists():
            with h5py.File(full / name, "r") as source, h5py.File(small / name, "w") as target:
                for index in range(rows[split] // 2):
                    source.copy(source[str(index)], target, name=str(index))
    shutil.rmtree(full)
    return small


def trained_samples(run: dict) -> tuple[int, int]:
    """Training samples seen per epoch (fixed rows plus fresh copies) and validation samples, as fit() makes them."""
    from mnist3d.training import split_pairs

    params, count = run["params"], json.loads(run["manifest"])["rows"]["train"]
    train_rows, val_rows = split_pairs(count, params["train"]["validation_split"], params["train"]["seed"])
    per_epoch = len(train_rows)
    if params["train"]["augment"] != "none":
        per_epoch += len(train_rows) // 2 * params["train"]["copies_per_epoch"]
    return per_epoch, len(val_rows)


def preprocess_report(data: Path, scratch: Path, repeats: int = 5) -> str:
    """Run stages/preprocess.py on `data` `repeats` times as a user would, and time its work against plain I/O."""
    import statistics

    import h5py

    from mnist3d.sources import copy_local
    from mnist3d.vectors import VECTORS_FILE

    project = scratch / "preprocess"
    (project / "data/raw").mkdir(parents=True)
    copy_local(data, project / "data/raw")
    shutil.copy(ROOT / "params.yaml", project)
    command = [sys.executable, str(ROOT / "stages/preprocess.py")]
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=project, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        print(f"  stages/preprocess.py: {walls[-1]:.2f} s", flush=True)
    written = sum(f.stat().st_size for f in (project / "data/processed").iterdir())
    params = yaml.safe_load((project / "params.yaml").read_text())["preprocess"]
    prep = time_preprocess(project / "data/raw" / VECTORS_FILE, scratch, params)
    with h5py.File(project / "data/raw" / VECTORS_FILE, "r") as h5:
        rows = {split: len(h5[f"y_{split}"]) for split in ("train", "test")}
    return (
        f"Data: {data.name} ({rows['train']} train / {rows['test']} test vectors). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}.\n\n"
        f"`python stages/preprocess.py` (align={params['align']}, writes {written / 1e9:.2f} GB), {repeats} runs: "
        f"fastest {min(walls):.2f} s, median {statistics.median(walls):.2f} s, slowest {max(walls):.2f} s.\n\n"
        f"Its work in one process (read and check the h5, colour, align, write the NPZ files): {prep['stage_s']:.2f} s, "
        f"against {prep['plain_s']:.2f} s for reading the h5 and writing as many bytes (fastest of 3, in turns).\n"
    )


def report(runs: dict, breakdown: dict, peak: float, startup: dict, prep: dict, data_name: str, sizes: str) -> str:
    """The results as Markdown."""
    from mnist3d.model import build_model

    lines = [
        f"Data: {data_name} ({sizes}). Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"matmul peak {peak:.0f} GFLOP/s (TensorFlow float32).",
        "",
        "| recipe | test acc | original half | rotated half | epochs | pipeline wall | fetch | preprocess | train "
        "| evaluate | samples/s | GFLOP/s (% of peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        seconds, metrics, params = run["seconds"], run["evaluate"], run["params"]
        per_epoch, validation = trained_samples(run)
        epochs = run["train"]["epochs"]
        architecture = params["architectures"][params["model"]]
        channels = 3 if params["preprocess"]["align"] == "none" else 6
        from mnist3d.model import forward_flops

        flops = forward_flops(build_model(architecture, input_shape=(16, 16, 16, channels)))
        achieved = (3 * per_epoch + validation) * flops * epochs / seconds["train"] / 1e9
        lines.append(
            f"| {name} | {metrics['accuracy']:.4f} | {metrics['accuracy_original']:.4f} "
            f"| {metrics['accuracy_rotated']:.4f} | {epochs} | {sum(seconds.values()):.0f} s | "
            + " | ".join(f"{seconds[stage]:.0f} s" for stage in STAGES)
            + f" | {per_epoch * epochs / seconds['train']:.0f} | {achieved:.1f} ({100 * achieved / peak:.0f} %) |"
        )
    default, seed = runs["default"]["seconds"], runs["seed"]["seconds"]
    ratio = sum(default.values()) / sum(seed.values())
    b = breakdown
    epochs = runs["default"]["train"]["epochs"]
    measured_epoch = (default["train"] - startup["tensorflow_s"] - b["read_clouds_s"] - b["read_npz_s"]) / epochs
    compute_rate = (3 * b["samples"]) * b["forward_flops"] / b["compute_s"] / 1e9
    lines += [
        "",
        f"Time to accuracy: the default pipeline took **{ratio:.2f}x** the notebook recipe's wall time "
        f"({sum(default.values()):.0f} s against {sum(seed.values()):.0f} s, fetch through evaluate).",
        "",
        f"One epoch of the default ({b['samples']} training samples, {b['validation_samples']} validation), "
        "each part timed alone (fastest of 2):",
        "",
        "| part | seconds per epoch |",
        "|---|---|",
        f"| forward and backward compute | {b['compute_s']:.1f} ({compute_rate:.0f} GFLOP/s, "
        f"{100 * compute_rate / peak:.0f} % of peak) |",
        f"| fresh-copy maker (rotate, voxelise, colour, align; on a worker thread) | {b['fresh_s']:.1f} |",
        f"| input pipeline (batching, without training) | {b['pipeline_s']:.1f} |",
        f"| validation | {b['validation_s']:.1f} |",
        f"| measured epoch in the train stage (its wall, less start-up, over {epochs} epochs) | {measured_epoch:.1f} |",
        "",
        f"Stage start-up, once per train stage: TensorFlow import {startup['tensorflow_s']:.1f} s, reading the point "
        f"clouds {b['read_clouds_s']:.1f} s, reading train.npz {b['read_npz_s']:.1f} s.",
        "",
        f"Preprocess stage work with align={prep['align']} (read and check the h5, colour, align, write the NPZ "
        f"files): {prep['stage_s']:.2f} s, against {prep['plain_s']:.2f} s for reading the h5 and writing as many "
        "bytes (fastest of 3, in turns).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data/raw"), help="a 3D MNIST zip, folder or vectors .h5")
    parser.add_argument("--quick", action="store_true", help="2,400 train / 800 test vectors and 6 epochs per recipe")
    parser.add_argument("--preprocess", action="store_true", help="only time the preprocess stage on --data")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results.md"), help="where to write the table")
    args = parser.parse_args()
    data = Path(args.data).expanduser().resolve()
    if not data.exists():
        sys.exit(f"error: {data} not found; run the pipeline first (dvc repro fetch) or pass --data ZIP_OR_H5")
    if args.preprocess:
        with tempfile.TemporaryDirectory(prefix="mnist3d-bench-") as scratch:
            text = preprocess_report(data, Path(scratch))
        Path(args.out).write_text(text)
        print("\n" + text + f"\nwritten to {args.out}")
        return

    with tempfile.TemporaryDirectory(prefix="mnist3d-bench-") as scratch:
        scratch = Path(scratch)
        quick = {"epochs": 6} if args.quick else {}
        if args.quick:
            data = subset(data, scratch, 2400, 800)
        recipes = {"default": quick, "seed": {**SEED_RECIPE, **quick}}
        runs = {}
        for name, overrides in recipes.items():
            print(f"== {name}: {overrides or 'params.yaml as it is'}", flush=True)
            project = make_project(scratch / name, data, overrides)
            runs[name] = run_pipeline(project)
            runs[name]["manifest"] = (project / "data/manifest.json").read_text()
        print("== taking one default epoch apart", flush=True)
        breakdown = epoch_breakdown(scratch / "default")
        startup = {"tensorflow_s": tensorflow_import_s()}
        from mnist3d.vectors import VECTORS_FILE

        default_params = runs["default"]["params"]["preprocess"]
        prep = time_preprocess(scratch / "default/data/raw" / VECTORS_FILE, scratch, default_params)
        peak = matmul_peak()
        rows = json.loads(runs["default"]["manifest"])["rows"]
    sizes = f"{rows['train']} train / {rows['test']} test vectors" + (", --quick" if args.quick else "")
    text = report(runs, breakdown, peak, startup, prep, Path(args.data).name, sizes)
    Path(args.out).write_text(text)
    print("\n" + text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
