"""Stage train: fit the Conv3D model, save models/model.keras, log the curves and metrics/train.json every epoch.

It reads only data/processed: the training grids, and the point clouds when train.augment is clouds.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/train.py

from mnist3d.errors import quiet_native_stderr, run_stage
from mnist3d.io.files import atomic_path
from mnist3d.params import load_architecture, load_section, load_top_level

PROCESSED_TRAIN = Path("data/processed/train.npz")
TRAIN_POINTS = Path("data/processed/train_points.npy")
TRAIN_CLOUDS = Path("data/processed/train_clouds.npz")
MODEL = Path("models/model.keras")
LIVE = Path("metrics/live")
METRICS = Path("metrics/train.json")


def main() -> None:
    epochs, architecture, params = load_top_level("epochs"), load_architecture(), load_section("train")
    preprocess = load_section("preprocess")  # fresh copies must be built exactly like the stored grids

    from mnist3d.io.processed import read_processed
    from mnist3d.train.augment import clouds_for, keep_freed_memory
    from mnist3d.train.replicas import read_tf_config
    from mnist3d.train.split import split_pairs

    keep_freed_memory()  # before the big arrays: the fresh copies then reuse memory instead of faulting pages in
    # Across hosts, only the chief writes; every worker trains on the same data and ends with the same weights.
    task = read_tf_config() if params["distribute"] == "multi_worker" else None
    chief = task is None or task.is_chief
    x, y = read_processed(PROCESSED_TRAIN)
    split_pairs(len(y), params["validation_split"], params["seed"])  # a split with no pair left fails before TF starts
    clouds = clouds_for(params, TRAIN_POINTS, TRAIN_CLOUDS, y)

    with quiet_native_stderr():  # importing TensorFlow prints C++ start-up lines that would bury our own
        from mnist3d.train.replicas import distribution_strategy, weights_digest

        strategy = distribution_strategy(params["distribute"])  # before any other TF op, as multi_worker requires
        from mnist3d.train.curves import EpochOutputs
        from mnist3d.train.fit import fit

    outputs = EpochOutputs(LIVE, METRICS, {"augment": params["augment"]}) if chief else None
    try:
        model, history, validation = fit(
            x, y, params, architecture, epochs, clouds, preprocess, [outputs] if chief else [], strategy
        )
    except BaseException:
        if outputs is not None:
            outputs.abandon()
        raise
    if task:
        print(f"train: worker {task.index} of {task.workers} ({task.task_type}); weights {weights_digest(model)}")
    if chief:
        with atomic_path(MODEL) as model_path:
            model.save(model_path)
        outputs.details["validation"] = validation
        outputs.write_summary()
        print(
            f"train: saved {MODEL}; validation accuracy {validation['accuracy']:.4f} "
            f"(original {validation['accuracy_original']:.4f}, rotated {validation['accuracy_rotated']:.4f})"
        )
    else:
        print(f"train: done; the chief writes {MODEL}, {LIVE} and {METRICS}, this worker nothing")


if __name__ == "__main__":
    run_stage(main)
