"""Stage train: fit the Conv3D model, save models/model.keras, log per-epoch curves with DVCLive."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/train.py

from mnist3d.errors import run_stage
from mnist3d.files import atomic_path, write_json
from mnist3d.params import load_architecture, load_section, load_top_level

PROCESSED_TRAIN = Path("data/processed/train.npz")
TRAIN_CLOUDS = Path("data/raw/train_point_clouds.h5")
MODEL = Path("models/model.keras")
LIVE = Path("metrics/live")
METRICS = Path("metrics/train.json")


def main() -> None:
    epochs, architecture, params = load_top_level("epochs"), load_architecture(), load_section("train")
    colormap = load_section("preprocess")["colormap"]

    from mnist3d.vectors import read_processed

    x, y = read_processed(PROCESSED_TRAIN)

    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from mnist3d.model import build_model
    from mnist3d.training import (
        EpochBatches,
        compile_model,
        fresh_copies,
        make_dataset,
        make_deterministic,
        split_pairs,
        summarise_history,
    )

    make_deterministic(params["seed"])
    train_rows, val_rows = split_pairs(len(y), params["validation_split"], params["seed"])
    make_fresh, fresh_labels = fresh_copies(params["augment"], x, y, train_rows, TRAIN_CLOUDS, colormap)
    batches = EpochBatches(x[train_rows], y[train_rows], params["batch_size"], params["seed"], make_fresh, fresh_labels)
    val_data = make_dataset(x[val_rows], y[val_rows], params["batch_size"])
    del x
    model = build_model(architecture)
    compile_model(
        model, params["learning_rate"], params["label_smoothing"], params["schedule"], epochs * batches.steps()
    )
    print(
        f"train: {batches.size} samples per epoch ({len(train_rows)} fixed, augment={params['augment']}), "
        f"{len(val_rows)} validation, {model.count_params():,} parameters"
    )
    with atomic_path(LIVE, directory=True) as live_dir:
        with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            history = model.fit(
                batches.dataset(),
                validation_data=val_data,
                epochs=epochs,
                callbacks=[DVCLiveCallback(live=live)],
                verbose=1 if sys.stdout.isatty() else 2,  # one line per epoch in logs
            )
        with atomic_path(MODEL) as model_path:
            model.save(model_path)
    write_json(METRICS, summarise_history(history.history))
    print(f"train: saved {MODEL}; final val accuracy {history.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    run_stage(main)
