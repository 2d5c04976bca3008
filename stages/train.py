"""Stage train: fit the Conv3D model, save models/model.keras, log the curves and metrics/train.json every epoch.

It reads only data/processed: the training grids, and the point clouds when train.augment is clouds.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/train.py

from mnist3d.errors import quiet_native_stderr, run_stage
from mnist3d.io.files import atomic_path, check_writable
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
    views = load_section("evaluate")["tta_views"]  # saved with the model, which evaluate and predict then follow

    from mnist3d.io.processed import read_processed
    from mnist3d.runtime import describe_devices, prepare_tensorflow
    from mnist3d.train.augment import clouds_for, keep_freed_memory
    from mnist3d.train.replicas import read_tf_config
    from mnist3d.train.split import split_pairs

    for output, directory in ((MODEL, False), (METRICS, False), (LIVE, True)):
        check_writable(output, directory)  # before an hour of training, not after it
    keep_freed_memory()  # before the big arrays: the fresh copies then reuse memory instead of faulting pages in
    prepare_tensorflow(params["threads"])
    # Across hosts, only the chief writes; every worker trains on the same data and ends with the same weights.
    task = read_tf_config() if params["distribute"] == "multi_worker" else None
    chief = task is None or task.is_chief
    x, y = read_processed(PROCESSED_TRAIN)
    split_pairs(len(y), params["validation_split"], params["seed"])  # a split with no pair left fails before TF starts
    clouds = clouds_for(params, TRAIN_POINTS, TRAIN_CLOUDS, y)

    with quiet_native_stderr():  # importing TensorFlow prints C++ start-up lines that would bury our own
        from mnist3d.train.replicas import distribution_strategy, weights_digest

        strategy = distribution_strategy(params["distribute"])  # before any other TF op, as multi_worker requires
        print(f"train: on {describe_devices(strategy)}", flush=True)
        from mnist3d.train.curves import EpochOutputs
        from mnist3d.train.fit import check_finite, fit
        from mnist3d.train.model import BuiltWith, save_model

    outputs = EpochOutputs(LIVE, METRICS, {"augment": params["augment"]}) if chief else None
    try:  # a failure anywhere in here, during training or after it, leaves no curves, summary or model behind
        model, history, validation = fit(
            x, y, params, architecture, epochs, clouds, preprocess, [outputs] if chief else [], strategy
        )
        check_finite(model, history, MODEL)
        if chief:  # the summary first: the model, written last, replaces an older one only when all else is done
            outputs.details["validation"] = validation
            outputs.write_summary()
            with atomic_path(MODEL) as model_path:
                save_model(model, model_path, BuiltWith(preprocess["colormap"], preprocess["align"], views))
    except BaseException:
        if outputs is not None:
            outputs.abandon()
        raise
    if task:
        print(f"train: worker {task.index} of {task.workers} ({task.task_type}); weights {weights_digest(model)}")
    if chief:
        print(
            f"train: saved {MODEL}; validation accuracy {validation['accuracy']:.4f} "
            f"(original {validation['accuracy_original']:.4f}, rotated {validation['accuracy_rotated']:.4f})"
        )
    else:
        print(f"train: done; the chief writes {MODEL}, {LIVE} and {METRICS}, this worker nothing")


if __name__ == "__main__":
    run_stage(main)
