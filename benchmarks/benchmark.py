"""Time to accuracy: the notebook's recipe against the default params, each run by `dvc exp run`, in one run.

    python benchmarks/benchmark.py --source synthetic     # offline (the default source); the README's figures
                                                          # add --set data.synthetic_train_digits=2000 and
                                                          # --set data.synthetic_test_digits=500
    python benchmarks/benchmark.py --data 3d-mnist.zip    # any 3D MNIST zip, folder or full_dataset_vectors.h5
    python benchmarks/benchmark.py --quick                # an eighth of each recipe's epochs
    python benchmarks/benchmark.py --set epochs=20        # any param, for both recipes
    python benchmarks/benchmark.py --breakdown-only       # only one default epoch taken apart

Both recipes run in one scratch git + DVC copy of the project as `dvc exp run --force evaluate`: fetch, preprocess,
train and evaluate, nothing reused from the other recipe or the run cache, so each wall is what a user waits for.
The seed recipe runs first, so that the default's outputs are left in the workspace for one of its epochs to be
taken apart. The report goes to --out (benchmarks/results.md, which the README's Results section quotes) as Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import io
import json
import os
import platform
import re
import resource
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

PROJECT_FILES = [  # what a copy of the pipeline needs: no data, outputs or tests (the tests' copies too)
    "dvc.yaml",
    "params.yaml",
    "mnist3d",
    "stages",
    "data/local/README.md",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
]
STAGES = ("fetch", "preprocess", "train", "evaluate")
# The notebook's recipe: the README's baseline command, `dvc exp run -S model=seed -S epochs=50 ...`.
SEED_RECIPE = "model=seed epochs=50 preprocess.align=none train.augment=none train.label_smoothing=0"
SEED_RECIPE += " train.schedule=constant train.learning_rate=0.001"
# DVC and the stage commands run this interpreter's `python`; unbuffered, each line arrives when it is printed.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def make_project(folder: Path, data: Path | None) -> Path:
    """A copy of the project's pipeline files, committed to a new git repository, whose source is local and reads
    `data`, or synthetic (at its default size and seed) without it."""
    for name in PROJECT_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, folder / name)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    # Here, not by -S: a path may hold what -S would parse.
    params["data"].update({"source": "local", "path": str(data)} if data else {"source": "synthetic"})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)
    return folder


def run_recipe(project: Path, name: str, settings: dict[str, str]) -> dict:
    """`dvc exp run --force evaluate -S KEY=VALUE...`: its wall, each stage's, training samples and metrics."""
    subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=project, check=True)  # drop the last recipe's -S
    command = [sys.executable, "-m", "dvc", "exp", "run", "--force", "-n", name, "evaluate"]
    command += [arg for key, value in settings.items() for arg in ("-S", f"{key}={value}")]
    print(f"== {name}: dvc {' '.join(command[3:])}", flush=True)
    start, marks, log = time.perf_counter(), [], ""
    with subprocess.Popen(
        command, cwd=project, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as dvc:
        for line in dvc.stdout:
            print("  " + line, end="", flush=True)
            log += line
            if stage := re.match(r"Running stage '(\w+)'", line):  # a stage runs until the next one starts
                marks.append((stage[1], time.perf_counter()))
    marks.append(("", time.perf_counter()))  # evaluate's time includes DVC committing the experiment
    if dvc.returncode:
        sys.exit(f"error: dvc exp run of the {name} recipe failed (exit {dvc.returncode}); its output is above")
    seconds = {stage: end - begin for (stage, begin), (_, end) in zip(marks, marks[1:], strict=False)}
    samples = int(re.search(r"train: (\d+) samples per epoch", log)[1])
    metrics = {stage: json.loads((project / f"metrics/{stage}.json").read_text()) for stage in ("train", "evaluate")}
    return {"wall": marks[-1][1] - start, "seconds": seconds, "samples": samples, **metrics}


def forward_flops(model) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass through the conv and dense layers."""
    layers = [layer for layer in model.layers if type(layer).__name__ in ("Conv3D", "Dense")]
    # Each output value takes one multiply-add per kernel weight feeding it: all but the kernel's last (filter) axis.
    return sum(2 * int(np.prod(layer.output.shape[1:])) * int(np.prod(layer.kernel.shape[:-1])) for layer in layers)


def timed(work):
    """`work()`'s result and the seconds it took."""
    start = time.perf_counter()
    return work(), time.perf_counter() - start


def fastest(repeats: int, work) -> float:
    """The fastest of `repeats` timed calls of `work`, in seconds."""
    return min(timed(work)[1] for _ in range(repeats))


def matmul_peak(size: int = 2048) -> float:
    """The best float32 matmul rate TensorFlow reaches here, in GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    return 2 * size**3 / fastest(10, lambda: tf.linalg.matmul(a, a).numpy()) / 1e9


class EpochClock:
    """Keras callbacks that time each epoch's parts as fit runs them: the training steps, the validation, then the
    callbacks between `first` (put at the head of the list) and `last` (at its end); with minor page faults."""

    def __init__(self):
        import keras

        self.marks: list[dict[str, tuple[float, int]]] = []
        clock = self

        class First(keras.callbacks.Callback):  # runs before the other callbacks of each hook
            def on_epoch_begin(self, epoch, logs=None):
                clock.marks.append({"begin": clock.now()})

            def on_test_begin(self, logs=None):
                clock.marks[-1]["validation"] = clock.now()

            def on_test_end(self, logs=None):
                clock.marks[-1]["callbacks"] = clock.now()

        class Last(keras.callbacks.Callback):  # runs after them: the epoch ends when the last callback is done
            def on_epoch_end(self, epoch, logs=None):
                clock.marks[-1]["end"] = clock.now()

        self.first, self.last = First(), Last()

    @staticmethod
    def now() -> tuple[float, int]:
        return time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def epoch(self, index: int) -> dict[str, float]:
        """Seconds of steps, validation and callbacks in epoch `index`, its whole wall, and minor faults per step."""
        mark = self.marks[index]
        return {
            "steps": mark["validation"][0] - mark["begin"][0],
            "validation": mark["callbacks"][0] - mark["validation"][0],
            "callbacks": mark["end"][0] - mark["callbacks"][0],
            "epoch": mark["end"][0] - mark["begin"][0],
            "faults": mark["validation"][1] - mark["begin"][1],
        }


def epoch_breakdown(project: Path) -> dict:
    """One epoch of the params in `project`'s workspace on its data/processed, as the train stage runs it (the
    package's own fit and callbacks, second epoch: the first traces the graph), each part also timed alone."""
    from mnist3d.errors import quiet_native_stderr
    from mnist3d.runtime import prepare_tensorflow

    params = yaml.safe_load((project / "params.yaml").read_text())
    train, processed = params["train"], project / "data/processed"
    prepare_tensorflow(train["threads"])  # as the train stage does, before TensorFlow starts
    with quiet_native_stderr():  # nothing has imported TensorFlow yet: this is what a train stage pays at its start
        import_tensorflow = timed(lambda: [importlib.import_module(name) for name in ("tensorflow", "keras")])[1]
    from mnist3d.io.processed import read_processed
    from mnist3d.train.augment import clouds_for, fresh_copies
    from mnist3d.train.batches import epoch_batches, make_dataset
    from mnist3d.train.curves import EpochOutputs
    from mnist3d.train.fit import fit
    from mnist3d.train.model import build_model
    from mnist3d.train.optimiser import compile_from_params
    from mnist3d.train.split import split_pairs

    architecture = params["architectures"][params["model"]]
    (x, y), read_npz = timed(lambda: read_processed(processed / "train.npz"))
    points, index = processed / "train_points.npy", processed / "train_clouds.npz"
    clouds, read_clouds = timed(lambda: clouds_for(train, points, index, y))
    # The epoch as the train stage runs it: fit itself, with the stage's callbacks writing into a scratch folder.
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as scratch:
        outputs = EpochOutputs(Path(scratch) / "live", Path(scratch) / "train.json")
        with contextlib.redirect_stdout(io.StringIO()):
            fit(x, y, train, architecture, 2, clouds, params["preprocess"], [clock.first, outputs, clock.last])
    stage = clock.epoch(1)
    # Each part alone.
    rows, val_rows = split_pairs(len(y), train["validation_split"], train["seed"])
    make_fresh, fresh_labels = fresh_copies(train, x, y, rows, clouds, params["preprocess"])
    rng = np.random.default_rng(0)
    parts = {"tensorflow": import_tensorflow, "read_npz": read_npz, "read_clouds": read_clouds}
    parts["fresh"] = fastest(2, lambda: make_fresh(rng)) if make_fresh else 0.0
    fresh, fresh_labels = (make_fresh(rng), fresh_labels) if make_fresh else (x[:0], y[:0])
    # The input pipeline alone, given the fresh copies: in training a worker thread has them ready.
    batches = epoch_batches(train, x, y, rows, make_fresh and (lambda _: fresh), fresh_labels, None)
    with quiet_native_stderr():  # TensorFlow's C++ lines as it first touches the devices
        model = build_model(architecture, input_shape=x.shape[1:])
        compile_from_params(model, train, batches.steps())
    parts["pipeline"] = fastest(2, lambda: sum(1 for _ in batches.dataset().take(batches.steps())))
    epoch_y = np.concatenate([y[rows], fresh_labels])
    in_memory = make_dataset(np.concatenate([x[rows], fresh]), epoch_y, train["batch_size"]).cache()
    validation = make_dataset(x[val_rows], y[val_rows], train["batch_size"])
    model.fit(in_memory, verbose=0, shuffle=False)  # traces the graph and fills the cache
    model.evaluate(validation, verbose=0)
    parts["compute"] = fastest(2, lambda: model.fit(in_memory, verbose=0, shuffle=False))
    parts["validation"] = fastest(2, lambda: model.evaluate(validation, verbose=0))
    return {
        **parts,
        "stage": stage,
        "steps": batches.steps(),
        "fresh_copies": len(fresh),
        "samples": len(epoch_y),
        "validation_samples": len(val_rows),
        "flops": forward_flops(model),
        "shape": x.shape[1:],
    }


ALLOCATOR_PROBE = """
import resource, sys, time
sys.path.insert(0, sys.argv[1])
import yaml
params = yaml.safe_load(open(sys.argv[2]))
from mnist3d.runtime import prepare_tensorflow
prepare_tensorflow(params["train"]["threads"])  # as the train stage and the epoch taken apart do
import numpy as np, keras
from mnist3d.train.model import build_model
model = build_model(params["architectures"][params["model"]], input_shape=tuple(int(n) for n in sys.argv[3:]))
model.compile(optimizer="adam", loss="categorical_crossentropy")
batch = params["train"]["batch_size"]
x = np.random.default_rng(0).random((batch * 4, *model.input_shape[1:]), dtype=np.float32)
y = np.eye(10, dtype=np.float32)[np.arange(len(x)) % 10]
model.fit(x, y, batch_size=batch, verbose=0)  # traces the graph
before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8, (time.perf_counter() - start) / 8)
"""


def allocators(project: Path, input_shape: tuple[int, ...]) -> dict[str, tuple[float, float]]:
    """Minor page faults and seconds per training step of the default model under malloc and under TensorFlow's BFC
    allocator, each in a fresh process: the allocator is chosen before TensorFlow starts."""
    from mnist3d.runtime import CPU_ALLOCATOR

    found = {}
    for name, value in (("malloc", "false"), ("BFC", "true")):
        env = {**ENV, CPU_ALLOCATOR: value, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, "-c", ALLOCATOR_PROBE, str(ROOT), str(project / "params.yaml")]
        result = subprocess.run([*command, *map(str, input_shape)], env=env, capture_output=True, text=True, check=True)
        faults, seconds = map(float, result.stdout.split()[-2:])
        found[name] = (faults, seconds)
    return found


def report(runs: dict, parts: dict, peak: float, allocator: dict) -> str:
    """The recipes' table, the time-to-accuracy ratio and the default's epoch taken apart, as Markdown."""
    lines = []
    if runs:
        lines += [
            "| recipe | test acc | original half | rotated half | validation acc (original / rotated) | epochs | wall "
            "| fetch | preprocess | train | evaluate | train samples/s |",
            "|---" * 12 + "|",
        ]
    for name, run in runs.items():
        test, valid = (
            [f"{scores[key]:.4f}" for key in ("accuracy", "accuracy_original", "accuracy_rotated")]
            for scores in (run["evaluate"], run["train"]["validation"])
        )
        epochs, times = run["train"]["epochs"], [f"{run['seconds'][stage]:.1f} s" for stage in STAGES]
        rate = run["samples"] * epochs / run["seconds"]["train"]
        row = [name, *test, f"{valid[0]} ({valid[1]} / {valid[2]})", epochs, f"{run['wall']:.1f} s", *times]
        lines.append("| " + " | ".join(map(str, row)) + f" | {rate:.0f} |")
    p, stage = parts, parts["stage"]
    text = "\n".join(lines)
    if runs:
        default, seed = runs["default"], runs["seed"]
        text += (
            f"\n\nTime to accuracy: the default took **{default['wall'] / seed['wall']:.2f}x** the notebook recipe's "
            f"wall ({default['wall']:.1f} s against {seed['wall']:.1f} s, `dvc exp run --force evaluate` each).\n\n"
        )
    rate = 3 * p["samples"] * p["flops"] / p["compute"] / 1e9  # a backward pass costs about two forward ones
    rest = stage["epoch"] - p["compute"] - p["fresh"] - p["pipeline"] - stage["validation"] - stage["callbacks"]
    (malloc_faults, malloc_step), (bfc_faults, bfc_step) = allocator["malloc"], allocator["BFC"]
    return text + (
        f"One epoch of the default ({p['samples']} training samples, {p['fresh_copies']} of them fresh copies, "
        f"{p['validation_samples']} validation; a forward pass is {p['flops'] / 1e6:.2f} MFLOP; TensorFlow's float32 "
        f"matmul peak here is {peak:.0f} GFLOP/s). The epoch as the train stage runs it (its second: the first "
        "traces the graph), and each of its parts timed alone (fastest of 2); the fresh copies and the batching run "
        "on threads of their own, beside the compute, so the rest is negative where they hide entirely:\n\n"
        "| part of an epoch | seconds |\n|---|---|\n"
        f"| forward and backward compute | {p['compute']:.2f} ({rate:.1f} GFLOP/s, {100 * rate / peak:.0f} % of peak) |\n"
        f"| fresh rotated copies (worker thread) | {p['fresh']:.2f} |\n"
        f"| batching (tf.data thread) | {p['pipeline']:.2f} |\n"
        f"| validation | {stage['validation']:.2f} |\n"
        f"| callbacks (curves and metrics/train.json) | {stage['callbacks']:.2f} |\n"
        f"| the rest | {rest:.2f} ({100 * rest / stage['epoch']:.0f} % of the epoch) |\n"
        f"| **the epoch as the train stage runs it** | **{stage['epoch']:.2f}** |\n\n"
        f"Minor page faults per training step: {stage['faults'] / p['steps']:,.0f} in that epoch. The default model's "
        f"step alone, each allocator in a fresh process: malloc {malloc_faults:,.0f} faults and {malloc_step:.2f} s, "
        f"TensorFlow's BFC allocator (what the stages use) {bfc_faults:,.0f} faults and {bfc_step:.2f} s.\n\n"
        f"The input pipeline alone: {p['samples'] / p['pipeline']:,.0f} samples/s batched from memory, fresh copies "
        f"made at {p['fresh_copies'] / p['fresh']:,.0f} a second on one thread (training here takes "
        f"{p['samples'] / stage['steps']:,.0f} samples/s).\n\n"
        f"Once per train stage: TensorFlow import {p['tensorflow']:.2f} s (its first import here), reading train.npz "
        f"{p['read_npz']:.2f} s, the memory-mapped point clouds {p['read_clouds']:.3f} s.\n"
    )


def machine() -> str:
    """The CPU, its cores and memory, and the versions that decide the figures."""
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = f"{models[0]} ({platform.machine()})" if models else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    versions = {name: importlib.metadata.version(name) for name in ("tensorflow", "keras", "numpy", "dvc")}
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, {memory:.0f} GiB; Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
    )


def figure_arguments(argv: list[str]) -> list[str]:
    """The command line without --out and --keep, which say where files go and change no figure."""
    kept, skip = [], False
    for argument in argv:
        if not skip and argument.split("=", 1)[0] not in ("--out", "--keep"):
            kept.append(argument)
        skip = argument in ("--out", "--keep")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("synthetic", "local"), default="synthetic", help="default: synthetic")
    parser.add_argument("--data", help="local: a 3D MNIST zip, folder or vectors .h5 (implies --source local)")
    parser.add_argument("--quick", action="store_true", help="an eighth of each recipe's epochs")
    parser.add_argument("--breakdown-only", action="store_true", help="only take a default epoch apart, no recipes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a param for both recipes")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results.md"), help="where to write the report")
    parser.add_argument("--keep", metavar="DIR", help="keep the scratch project, the default's outputs in it, here")
    args = parser.parse_args()
    data = None
    if args.data or args.source == "local":
        data = Path(args.data or ROOT / "data/local").expanduser().resolve()
        if not data.exists():
            sys.exit(f"error: {data} not found; pass --data with a 3D MNIST zip, folder or vectors .h5")
    if not all("=" in setting for setting in args.set):
        parser.error("--set takes KEY=VALUE, as dvc exp run -S does")
    command = "python benchmarks/benchmark.py " + " ".join(figure_arguments(sys.argv[1:])).replace(str(ROOT) + "/", "")
    with tempfile.TemporaryDirectory(prefix="mnist3d-bench-") as scratch:
        if args.keep:
            scratch = Path(args.keep).expanduser().resolve()
            scratch.mkdir(parents=True)  # a new folder: never one that holds something already
        project, runs = make_project(Path(scratch), data), {}
        epochs = {"seed": 50, "default": yaml.safe_load((ROOT / "params.yaml").read_text())["epochs"]}
        recipes = {"default": []} if args.breakdown_only else {"seed": SEED_RECIPE.split(), "default": []}
        for name, recipe in recipes.items():
            quick = [f"epochs={max(1, round(epochs[name] / 8))}"] if args.quick else []
            settings = [*recipe, *quick, *args.set]  # later ones win
            runs[name] = run_recipe(project, name, dict(setting.split("=", 1) for setting in settings))
        print("== one epoch of the default, taken apart", flush=True)
        parts = epoch_breakdown(project)
        text = report({} if args.breakdown_only else runs, parts, matmul_peak(), allocators(project, parts["shape"]))
        manifest = json.loads((project / "data/manifest.json").read_text())
    rows = manifest["rows"]
    source = f"{Path(data).name}" if data else f"the synthetic source at data.seed {manifest['seed']}"
    text = (
        f"Command: `{command.strip()}`, {time.strftime('%Y-%m-%d')}.\n"
        f"Data: {source}, {rows['train']} train / {rows['test']} test vectors{', --quick' if args.quick else ''}.\n"
        f"Machine: {machine()}.\n\n{text}"
    )
    Path(args.out).write_text(text)
    print(f"\n{text}\nwritten to {args.out}")


if __name__ == "__main__":
    main()
