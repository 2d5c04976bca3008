"""Stage preprocess: everything train and evaluate read, in data/processed.

{train,test}.npz: the voxel vectors through the colormap as RGB grids, plus aligned copies (preprocess.align);
train_points.npy and train_clouds.npz: the training point clouds, packed for train to memory-map.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/preprocess.py

from mnist3d.errors import run_stage
from mnist3d.features.inputs import write_network_inputs
from mnist3d.io.files import atomic_path, check_writable
from mnist3d.io.processed import pack_clouds, write_packed_clouds
from mnist3d.io.readers import read_source_clouds, read_vectors
from mnist3d.io.schema import CLOUD_FILES, VECTORS_FILE
from mnist3d.params import load_section

RAW = Path("data/raw")
PROCESSED = Path("data/processed")


def main() -> None:
    params = load_section("preprocess")
    check_writable(PROCESSED, directory=True)  # before the reading, not after it
    splits = read_vectors(RAW / VECTORS_FILE)
    clouds, labels = read_source_clouds(RAW / CLOUD_FILES["train"], splits["train"].y)
    with atomic_path(PROCESSED, directory=True) as folder:
        for name, split in splits.items():
            write_network_inputs(folder / f"{name}.npz", split, params["colormap"], params["align"])
            print(f"preprocess: {name}: {len(split.y)} grids through {params['colormap']}, align {params['align']}")
        write_packed_clouds(folder / "train_points.npy", folder / "train_clouds.npz", pack_clouds(clouds, labels))
        print(f"preprocess: train: {len(labels)} point clouds" + ("" if len(labels) else " (the source has none)"))


if __name__ == "__main__":
    run_stage(main)
