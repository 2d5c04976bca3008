"""An offline stand-in for the Kaggle files: font-rendered digits taken through the dataset's procedure."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mnist3d import NUM_CLASSES
from mnist3d.data.voxels import digit_cloud, random_rotations, rotate_with_noise, voxelise
from mnist3d.io.schema import CLOUD_FILES, VECTORS_FILE, Split, write_vectors
from mnist3d.parallel import usable_cores

# Fonts that ship inside matplotlib, so rendering needs nothing from the network or the system.
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)
SIDE = 28  # MNIST image side
BOX = 20  # MNIST fits each digit into a 20x20 box inside the 28x28 image
SUPERSAMPLE = 4  # sub-pixels per pixel side, for anti-aliased grey edges
CHUNK = 250  # digits a worker makes at once: bounds memory, shows progress


@cache
def glyph_polygons(font: str, digit: int) -> tuple[np.ndarray, ...]:
    """The outline polygons of a digit in pixel units, scaled into the 20x20 box centred in 28x28."""
    import matplotlib
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath(
        (0, 0), str(digit), size=1, prop=FontProperties(fname=Path(matplotlib.get_data_path(), "fonts/ttf", font))
    )
    polygons = [np.asarray(p) for p in path.to_polygons()]
    points = np.concatenate(polygons)
    low, high = points.min(axis=0), points.max(axis=0)
    scale = BOX / (high - low).max()
    centre = (low + high) / 2
    # Font y runs up and image rows run down: flip y so the digit stands upright in (column, row) space.
    return tuple((p - centre) * scale * np.array([1.0, -1.0]) + SIDE / 2 for p in polygons)


def _smooth_field(rng: np.random.Generator, size: int, coarse: int = 5) -> np.ndarray:
    """A smooth random 2D displacement field (size, size, 2): coarse noise, bilinearly upsampled."""
    noise = rng.normal(size=(coarse, coarse, 2))
    where = np.linspace(0, coarse - 1, size)
    low = np.minimum(where.astype(int), coarse - 2)
    frac = (where - low)[:, None]
    rows = noise[low] * (1 - frac)[:, :, None] + noise[low + 1] * frac[:, :, None]
    return rows[:, low] * (1 - frac.T)[:, :, None] + rows[:, low + 1] * frac.T[:, :, None]


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow (steps > 0) or shrink (steps < 0) a boolean mask by 4-neighbour steps."""
    grow = steps > 0
    for _ in range(abs(steps)):
        padded = np.pad(mask, 1, constant_values=not grow)
        around = [
            padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
            for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
        ]
        mask = np.logical_or.reduce([mask, *around]) if grow else np.logical_and.reduce([mask, *around])
    return mask


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 grey image in [0, 1] of one digit: random font, affine, stroke width and elastic warp."""
    from matplotlib.path import Path as MplPath

    polygons = glyph_polygons(FONTS[rng.integers(len(FONTS))], digit)
    angle, shear = rng.uniform(-0.2, 0.2), rng.uniform(-0.3, 0.3)
    scale = np.diag([rng.uniform(0.7, 1.1), rng.uniform(0.85, 1.1)])
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = turn @ np.array([[1.0, shear], [0.0, 1.0]]) @ scale
    shift = rng.uniform(-1.5, 1.5, 2)
    size = SIDE * SUPERSAMPLE
    centres = (np.arange(size) + 0.5) / SUPERSAMPLE
    cols, rows = np.meshgrid(centres, centres)
    warped = np.stack([cols, rows], axis=-1) + _smooth_field(rng, size) * rng.uniform(0.3, 1.0)
    # Map each sub-pixel back into glyph space, then test it against the outline polygons (even-odd, for holes).
    inverse = (warped - SIDE / 2 - shift) @ np.linalg.inv(forward).T + SIDE / 2
    flat = inverse.reshape(-1, 2)
    inside = np.zeros(len(flat), dtype=bool)
    for polygon in polygons:
        # Only sub-pixels within the polygon's bounding box can lie inside it: the test is the costliest step here.
        near = np.flatnonzero(((flat >= polygon.min(axis=0)) & (flat <= polygon.max(axis=0))).all(axis=1))
        inside[near] ^= MplPath(polygon).contains_points(flat[near])
    mask = _dilate(inside.reshape(size, size), int(rng.integers(0, 4)))
    return mask.reshape(SIDE, SUPERSAMPLE, SIDE, SUPERSAMPLE).mean(axis=(1, 3))


def make_digits(seed: int, split: int, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` digits of one chunk: their vectors (original, then rotated copy), labels and padded images.

    Each chunk draws from its own generator, seeded by (seed, split, chunk), so the data does not depend on how
    many worker processes made the chunks or in which order they finished.
    """
    rng = np.random.default_rng([seed, split, chunk])
    labels = rng.integers(0, NUM_CLASSES, count)
    images, vectors = [], []
    for digit, rotation in zip(labels, random_rotations(rng, count), strict=True):
        images.append(np.pad(render_digit(int(digit), rng), 1))
        cloud = digit_cloud(images[-1])
        vectors += [voxelise(cloud), voxelise(rotate_with_noise(cloud, rotation, rng))]  # row 2i original, 2i+1 rotated
    return np.stack(vectors), labels, np.stack(images)


def write_cloud_groups(group_parent, images: np.ndarray, labels: np.ndarray, first: int) -> None:
    """Add digits in the Kaggle point-cloud schema, numbered from `first`: a group each with points, img, a label.

    The points are made again from the image here (digit_cloud is exact and cheap): sending each chunk's clouds
    from its worker process would move 160 MB through a pipe, which took longer than making them.
    """
    for index, (image, label) in enumerate(zip(images, labels, strict=True), start=first):
        group = group_parent.create_group(str(index))
        group.create_dataset("points", data=digit_cloud(image))
        group.create_dataset("img", data=image)
        group.attrs["label"] = np.int64(label)


def write_dataset(folder: str | os.PathLike, train_digits: int, test_digits: int, seed: int) -> None:
    """Write the three Kaggle files for a synthetic dataset; the same seed gives the same bytes of data.

    Chunks of CHUNK digits are made on every core by worker processes (rendering is pure numpy and matplotlib,
    so threads would share one core), and each chunk is written as it arrives.
    """
    import h5py

    folder = Path(folder)
    counts = {"train": train_digits, "test": test_digits}
    starts = {name: range(0, count, CHUNK) for name, count in counts.items()}
    jobs = [
        (seed, split, chunk, min(CHUNK, counts[name] - start))
        for split, name in enumerate(counts)
        for chunk, start in enumerate(starts[name])
    ]
    # Starting a worker process costs about a second: only worth it for more than one chunk's worth of digits.
    workers = min(usable_cores(), len(jobs)) if train_digits + test_digits > CHUNK else 1
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None
    made = pool.map(make_digits, *zip(*jobs, strict=True)) if pool else (make_digits(*job) for job in jobs)
    splits = {}
    try:
        for name, count in counts.items():
            vectors, labels = [], []
            with h5py.File(folder / CLOUD_FILES[name], "w") as h5:
                for start in starts[name]:
                    x, digits, images = next(made)
                    write_cloud_groups(h5, images, digits, start)
                    vectors.append(x)
                    labels.append(np.repeat(digits, 2))
                    print(f"synthetic {name}: {start + len(digits)}/{count} digits", file=sys.stderr, flush=True)
            splits[name] = Split(np.concatenate(vectors), np.concatenate(labels))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    write_vectors(folder / VECTORS_FILE, splits)
