"""Stage train: fit the Conv3D model, save models/model.keras, log per-epoch curves with DVCLive."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/train.py

from mnist3d.errors import quiet_native_stderr, run_stage
from mnist3d.files import atomic_path, write_json
from mnist3d.params import load_architecture, load_section, load_top_level

PROCESSED_TRAIN = Path("data/processed/train.npz")
TRAIN_CLOUDS = Path("data/raw/train_point_clouds.h5")
MODEL = Path("models/model.keras")
LIVE = Path("metrics/live")
METRICS = Path("metrics/train.json")


def main() -> None:
    epochs, architecture, params = load_top_level("epochs"), load_architecture(), load_section("train")
    preprocess = load_section("preprocess")  # fresh copies must be built exactly like the stored grids

    from mnist3d.vectors import read_processed

    x, y = read_processed(PROCESSED_TRAIN)

    with quiet_native_stderr():  # importing TensorFlow prints C++ start-up lines that would bury our own
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        from mnist3d.training import fit, summarise_history

    with atomic_path(LIVE, directory=True) as live_dir:
        with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            model, history = fit(
                x, y, params, architecture, epochs, TRAIN_CLOUDS, preprocess, [DVCLiveCallback(live=live)]
            )
        with atomic_path(MODEL) as model_path:
            model.save(model_path)
    write_json(METRICS, summarise_history(history))
    print(f"train: saved {MODEL}; final val accuracy {history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    run_stage(main)
