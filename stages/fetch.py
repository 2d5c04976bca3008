"""Stage fetch: put the raw 3D MNIST files in data/raw/ and what they are and came from in data/manifest.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import mnist3d when run as stages/fetch.py

from mnist3d.data.sources import fetch
from mnist3d.errors import run_stage
from mnist3d.params import load_section

RAW = Path("data/raw")
MANIFEST = Path("data/manifest.json")  # outside data/raw, which preprocess reads: data.path must not re-run it


def main() -> None:
    manifest = fetch(load_section("data"), RAW, MANIFEST)
    print(f"fetch: wrote {RAW} from {manifest['source']}: {manifest['rows']}")


if __name__ == "__main__":
    run_stage(main)
