"""Fuzzing every reader with random bytes, damaged copies of valid files, HDF5 files of random structure and params of
random values: each reads correctly or ends in one PipelineError line (which the stages turn into one `error:` line),
never another error. The default Hypothesis profile is quick; `--hypothesis-profile=thorough` searches wider."""

import copy
import functools
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

from mnist3d import VOXELS
from mnist3d.data.sources import extract_zip
from mnist3d.errors import PipelineError, printable
from mnist3d.io.formats import read_input
from mnist3d.io.processed import read_processed
from mnist3d.io.readers import read_point_clouds, read_vectors
from mnist3d.io.schema import VECTORS_FILE
from mnist3d.params import load_params
from tests.conftest import ROOT, build_h5_item, set_param, tiny_split

pytestmark = pytest.mark.filterwarnings("error")  # a warning would print a second line beside the error line


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A scratch folder for every example, with the readers' size limit at 1 MB so that no input can take more."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST3D_MAX_FILE_MB", "1")
        yield tmp_path_factory.mktemp("fuzz")


def reads_or_refuses(read, path: Path) -> str | None:
    """The property: `read(path)` passes its own checks of what it returned, or raises a one-line PipelineError."""
    try:
        read(path)
    except PipelineError as error:
        assert str(error) and "\n" not in str(error), repr(str(error))
        event(f"{read.__name__}: refused")  # --hypothesis-show-statistics shows how often each reader got through
        return str(error)
    event(f"{read.__name__}: read")
    return None


def predict_reads(path: Path) -> None:
    samples = read_input(path)
    if samples.vectors is not None:
        assert samples.vectors.shape == (len(samples.index), VOXELS) and 0 <= samples.vectors.min() <= 1
    else:
        assert len(samples.clouds) == len(samples.index) and all(np.isfinite(c).all() for c in samples.clouds)
    assert samples.labels is None or samples.labels.shape == samples.index.shape


def vectors_read(path: Path) -> None:
    for split in read_vectors(path).values():
        assert split.x.shape == (len(split.y), VOXELS) and split.x.max() <= 1 and split.y.max() <= 9


def clouds_read(path: Path) -> None:
    clouds, labels = read_point_clouds(path)
    assert all(c.shape[0] == 3 and np.isfinite(c).all() for c in clouds)
    assert labels is None or labels.shape == (len(clouds),)


def fetch_unzips(path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent) as out:
        extract_zip(path, Path(out))
        vectors_read(Path(out) / VECTORS_FILE)


READERS = {  # who reads a file of this name or suffix: predict, and what fetch and preprocess read
    ".h5": [predict_reads, vectors_read, clouds_read],
    "vectors.h5": [predict_reads, vectors_read],
    "clouds.h5": [predict_reads, clouds_read],
    ".zip": [fetch_unzips],
    ".yaml": [load_params],
}


def readers(name: str) -> list:
    return READERS.get(name) or READERS.get(Path(name).suffix) or [predict_reads]


PLY = "ply\nformat {}\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n"


@functools.cache
def valid_files() -> dict[str, bytes]:
    """One small valid file of each kind, gzip chunks included, to damage."""
    points = np.arange(21.0).reshape(7, 3)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        with h5py.File(folder / "vectors.h5", "w") as h5:
            for split in ("train", "test"):
                h5.create_dataset(f"X_{split}", data=tiny_split(2).x, chunks=(1, VOXELS), compression="gzip")
                h5[f"y_{split}"] = tiny_split(2).y
        with h5py.File(folder / "clouds.h5", "w") as h5:
            for i in range(2):
                h5.create_group(str(i)).create_dataset("points", data=points, chunks=(4, 1), compression="gzip")
                h5[str(i)].attrs["label"] = i
        np.save(folder / "cloud.npy", points)
        np.save(folder / "grid.npy", tiny_split(1).x.reshape(16, 16, 16).astype(np.float16))
        with zipfile.ZipFile(folder / "3d-mnist.zip", "w", zipfile.ZIP_DEFLATED) as zipped:  # the same bytes each run
            info = zipfile.ZipInfo(VECTORS_FILE, (2020, 1, 1, 0, 0, 0))
            zipped.writestr(info, (folder / "vectors.h5").read_bytes(), zipfile.ZIP_DEFLATED)
        files = {path.name: path.read_bytes() for path in folder.iterdir()}
    return files | {
        "cloud.txt": b"# x y z\n1 2 3\n4,5,6\n7\t8 9\n",
        "ascii.ply": PLY.format("ascii 1.0").encode() + b"1 2 3\n4 5 6\n7 8 9\n",
        "binary.ply": PLY.format("binary_little_endian 1.0").encode() + points[:3].astype("<f4").tobytes(),
    }


@given(suffix=st.sampled_from([".h5", ".npy", ".txt", ".csv", ".ply", ".zip", ".yaml"]), data=st.binary(max_size=512))
@example(suffix=".txt", data=b"")  # numpy warned of no data: a second line beside the error (fixed)
def test_random_bytes(folder, suffix, data):
    path = folder / f"random{suffix}"
    path.write_bytes(data)
    for read in readers(path.name):
        reads_or_refuses(read, path)


@given(
    name=st.sampled_from(sorted(valid_files())),
    length=st.none() | st.integers(0, 1 << 20),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), max_size=8),
)
# What the fuzzer found (fixed), at offsets in the files valid_files builds with the pinned h5py:
@example(name="vectors.h5", length=None, flips=[(17, 1)])  # RuntimeError: HDF5's link visit failed
@example(name="clouds.h5", length=None, flips=[(24, 0)])  # SystemError: h5py lost an error raised during the visit
@example(name="vectors.h5", length=None, flips=[(872, 1)])  # TypeError: h5py met an unknown string encoding
@example(name="vectors.h5", length=None, flips=[(889, 7)])  # ValueError: a float type numpy cannot hold
@example(name="vectors.h5", length=None, flips=[(965, 3)])  # OSError: HDF5 could not read the data
@example(name="3d-mnist.zip", length=None, flips=[(28, 1)])  # zlib.error: a damaged deflate stream
@example(name="3d-mnist.zip", length=None, flips=[(29, 6)])  # EOFError: a compressed member cut short
@example(name="cloud.npy", length=None, flips=[(8, 6)])  # tokenize.TokenError: an .npy header numpy cannot parse
@example(name="cloud.npy", length=None, flips=[(21, 4)])  # SyntaxError: likewise
def test_damaged_copies_of_valid_files(folder, name, length, flips):
    """Each valid file cut short anywhere and with up to 8 bits flipped still reads, or is refused."""
    original = valid_files()[name]
    damaged = bytearray(original[: None if length is None else length % len(original)])
    for position, bit in flips if damaged else []:
        damaged[position % len(damaged)] ^= 1 << bit
    path = folder / f"damaged{Path(name).suffix}"
    path.write_bytes(bytes(damaged))
    for read in readers(name):
        reads_or_refuses(read, path)


OUTSIDE = ["soft", "external-link", "external-storage", "virtual"]  # links and layouts that read from elsewhere
SHAPES = st.sampled_from([[2, VOXELS], [2], [2, 1], [4, 3]]) | st.lists(
    st.sampled_from([0, 1, 2, 3, VOXELS]), max_size=3
)
LEAF = st.tuples(
    st.sampled_from(["dataset"] * 4 + ["hard", *OUTSIDE]),  # mostly datasets, so that some files read
    SHAPES.filter(lambda shape: np.prod(shape) <= 3 * VOXELS),
    st.sampled_from(["<f8", ">f4", "f2", "<i8", "u1", "?", "<c16", "S3", "compound"]),
    st.lists(st.sampled_from([0.0, 1.0, 0.5, 3.0, 9.0, -1.0, 12.0, np.nan, np.inf, 1e300]), min_size=1, max_size=3),
)
LABELS = st.none() | st.integers(-2, 12) | st.floats() | st.text("7a ", max_size=2) | st.lists(st.integers(0, 9))
GROUP = st.tuples(st.just("group"), st.dictionaries(st.sampled_from(["points", "img"]), LEAF, max_size=2), LABELS)
X_OK, Y_OK = ("dataset", [2, VOXELS], "<f8", [0.0, 1.0]), ("dataset", [2], "<i8", [7.0])
VALID = {  # a vectors file and a point-cloud file that read, into which the fuzzer puts up to 3 random items
    "vectors": {"X_train": X_OK, "y_train": Y_OK, "X_test": X_OK, "y_test": Y_OK},
    "clouds": dict.fromkeys(["0", "1"], ("group", {"points": ("dataset", [4, 3], "<f8", [0.5, 9.0])}, 7)),
}
CHANGED = {"vectors": ["X_test", "y_test", "X_train", "y_train", "0"], "clouds": ["0", "1", "2", "X_test"]}
TREE = st.sampled_from(sorted(VALID)).flatmap(
    lambda valid: st.dictionaries(st.sampled_from(CHANGED[valid]), LEAF | GROUP, max_size=3).map(
        lambda changes: {**VALID[valid], **changes}
    )
)


@given(tree=TREE)
def test_hdf5_files_of_random_structure(folder, tree):
    """Random shapes, dtypes, labels and links: read or refused, and refused whenever any data lies elsewhere."""
    path = folder / "random.h5"
    with h5py.File(path, "w") as h5:
        for name, item in tree.items():
            build_h5_item(h5, h5, name, item, folder)
    leaves = [leaf for item in tree.values() for leaf in (item[1].values() if item[0] == "group" else [item])]
    for read in readers(path.name):
        error = reads_or_refuses(read, path)
        if any(leaf[0] in OUTSIDE for leaf in leaves):
            assert error and "only data stored in the file is read" in error, error


def dotted_keys(params: dict, prefix: str = "") -> list[str]:
    keys = [f"{prefix}{key}" for key in params] + [f"{prefix}unknown"]
    for key, value in params.items():
        keys += dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else []
    return keys


SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3),
    max_leaves=8,
)


@given(key=st.sampled_from(dotted_keys(SHIPPED)), value=YAML_VALUES)
@example(key="architectures", value={0: None})  # TypeError: a preset name that is not a string (fixed)
def test_params_with_a_random_value_anywhere(folder, key, value):
    params = copy.deepcopy(SHIPPED)
    set_param(params, key, value)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    reads_or_refuses(load_params, path)


def test_the_valid_files_read(folder):
    """The files the damaged copies start from pass every reader, so the damage is what the fuzzer tries."""
    for name, data in valid_files().items():
        (folder / name).write_bytes(data)
        for read in readers(name):
            read(folder / name)


PROCESSED_VALUES = st.sampled_from([0.0, 0.5, 1.0, -0.1, 1.5, 255.0, np.nan, np.inf, -np.inf, 1e30])
PROCESSED_SHAPES = st.sampled_from(
    [(2, 16, 16, 16, 3), (2, 16, 16, 16, 6), (2, 16, 16, 3), (2, 4096), (0, 16, 16, 16, 3)]
)


@given(
    shape=PROCESSED_SHAPES,
    dtype=st.sampled_from(["<f4", ">f8", "f2", "<i4", "u1", "?", "<c8"]),
    values=st.lists(PROCESSED_VALUES, min_size=1, max_size=3),
    labels=st.lists(st.integers(-3, 12), min_size=0, max_size=3),
    label_dtype=st.sampled_from(["<i8", "u1", "<f8", "?"]),
)
@example(shape=(2, 16, 16, 16, 3), dtype="<f4", values=[np.nan], labels=[1, 1], label_dtype="<i8")  # NaN grids
@example(shape=(2, 16, 16, 16, 3), dtype="<f4", values=[255.0], labels=[1, 1], label_dtype="<i8")  # a 0-255 scale
def test_processed_files_of_random_values(folder, shape, dtype, values, labels, label_dtype):
    """data/processed as train and evaluate read it: any values, dtypes, shapes and labels read as checked grids in
    [0, 1] with labels 0..9, or are refused in one line."""
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.resize(np.array(values), shape).astype(dtype)
        y = np.resize(np.array(labels or [0]), shape[0]).astype(label_dtype)
    path = folder / "test.npz"
    np.savez(path, x=x, y=y)

    def processed_reads(path: Path) -> None:
        grids, targets = read_processed(path)
        assert np.isfinite(grids).all() and grids.min() >= 0 and grids.max() <= 1 and grids.shape[1:4] == (16,) * 3
        assert targets.min() >= 0 and targets.max() <= 9 and len(targets) == len(grids)

    reads_or_refuses(processed_reads, path)


# Any character a file name may hold: control characters, terminal escapes, bidi controls, lone surrogates from bytes
# that are not UTF-8, and the rest of Unicode.
NAME_CHARS = st.characters(exclude_characters="/\x00") | st.sampled_from(
    ["\n", "\r", "\x1b", "\u202e", "\x7f", "\udcff"]
)


@given(folder_name=st.text(NAME_CHARS, min_size=1, max_size=6), file_name=st.text(NAME_CHARS, min_size=1, max_size=6))
def test_names_of_any_characters_print_as_one_line_of_text(folder, folder_name, file_name):
    """A file in a folder, both of random names, read by predict's reader: read or refused, and the refusal, as the
    stages print it, is one line of printable text."""
    assume(folder_name not in (".", "..") and file_name not in (".", ".."))
    try:
        place = folder / "names" / folder_name
        place.mkdir(parents=True, exist_ok=True)
        path = place / f"{file_name}.npy"
        path.write_bytes(b"not an array")
    except (OSError, UnicodeEncodeError):  # a name this filesystem refuses: nothing for the reader to meet
        event("name refused by the filesystem")
        return
    with pytest.raises(PipelineError) as refused:
        read_input(path)
    shown = printable(str(refused.value))  # what run_stage prints after "error: "
    assert shown.isprintable() and printable(str(path)) in shown, repr(shown)  # one line, the name escaped
