"""Stage preprocess: colour the voxel vectors into RGB grids (plus aligned copies), data/processed/{train,test}.npz."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/preprocess.py

from mnist3d.errors import run_stage
from mnist3d.files import atomic_path
from mnist3d.inputs import write_network_inputs
from mnist3d.params import load_section
from mnist3d.readers import read_vectors
from mnist3d.vectors import VECTORS_FILE

RAW = Path("data/raw")
PROCESSED = Path("data/processed")


def main() -> None:
    params = load_section("preprocess")
    splits = read_vectors(RAW / VECTORS_FILE)
    with atomic_path(PROCESSED, directory=True) as folder:
        for name, split in splits.items():
            write_network_inputs(folder / f"{name}.npz", split, params["colormap"], params["align"])
            print(f"preprocess: {name}: {len(split.y)} grids through {params['colormap']}, align {params['align']}")


if __name__ == "__main__":
    run_stage(main)
