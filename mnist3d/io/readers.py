"""The Kaggle HDF5 files as the pipeline reads them: the vectors file and the point-cloud files.

Nothing here trusts a file: each is a regular file, sizes are checked before anything is read
(mnist3d.io.files.check_size), dtypes after, and every value is finite once converted.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mnist3d.errors import PipelineError, reading
from mnist3d.io.files import check_size, file_kind, max_clouds, regular_file
from mnist3d.io.schema import SPLITS, Split, check_cloud_labels, check_labels, check_numbers, check_split

# All clouds together may take this many times the file limit: Kaggle's 5,000 training clouds are ~110M points,
# 1.3 GB as the float32 that training holds (each group is also checked against the limit on its own).
CLOUDS_TIMES = 4
CHUNK_ROWS = 1024  # rows of a vectors dataset read at a time
DEFLATE, SHUFFLE = 1, 2  # HDF5's ids of the gzip and byte-shuffle filters
LINKS_PER_CLOUD = 4  # a point-cloud group and its 2-3 datasets: the links a file may hold, per cloud it may hold
# What h5py raises when the HDF5 library fails on a file's bytes (it maps the library's errors onto these).
H5PY_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def h5_dataset(h5, key: str, name: str):
    """h5[key] if it is a dataset of real numbers whose declared size is within the limit, else a PipelineError."""
    import h5py

    item = h5.get(key)
    if not isinstance(item, h5py.Dataset):
        kind = "missing" if item is None else f"a {type(item).__name__.lower()}, not a dataset"
        raise PipelineError(f"{name}: {key} is {kind}; is this a 3D MNIST file? fetch or export it again")
    check_numbers(item.dtype, f"{name} {key}", "the 3D MNIST files hold floats and integers")
    declared = int(np.prod(item.shape, dtype=object)) * item.dtype.itemsize
    check_size(declared, f"{name} {key}")
    if item.chunks is not None:  # a chunk is read whole: one larger than the data would inflate past it
        chunk_bytes = int(np.prod(item.chunks, dtype=object)) * item.dtype.itemsize
        if chunk_bytes > max(declared, 1 << 20):
            raise PipelineError(
                f"{name} {key}: declares chunks of {chunk_bytes:,} bytes for {declared:,} bytes of data; export it again"
            )
    return item


def read_rows(dataset, rows: slice = slice(None), name: str = "") -> np.ndarray:
    """Rows of an h5 dataset (checked by h5_dataset) as one array in its stored dtype.

    Uncompressed data is read CHUNK_ROWS rows at a time through h5py. Compressed chunks are inflated here, none past
    its declared size: HDF5's own gzip filter grows its buffer for as long as a stream goes on.
    """
    start, stop, _ = rows.indices(len(dataset))
    out = np.empty((max(stop - start, 0), *dataset.shape[1:]), dtype=dataset.dtype)
    filters = gzip_chunks(dataset, name)
    if filters:
        _inflate_rows(dataset, start, stop, out, name, filters)
        return out
    for begin in range(start, stop, CHUNK_ROWS):
        end = min(begin + CHUNK_ROWS, stop)
        dataset.read_direct(out, np.s_[begin:end], np.s_[begin - start : end - start])
    return out


def gzip_chunks(dataset, name: str) -> tuple[int, ...]:
    """The filters of a dataset stored as gzip chunks (gzip, or byte shuffle then gzip); () if uncompressed.

    Any other filter is refused: its inflation could not be bounded.
    """
    if dataset.chunks is None:
        return ()
    plist = dataset.id.get_create_plist()
    filters = tuple(plist.get_filter(index)[0] for index in range(plist.get_nfilters()))
    if filters not in ((), (DEFLATE,), (SHUFFLE, DEFLATE)):
        raise PipelineError(
            f"{name}: stored with HDF5 filters {list(filters)}; only gzip (with or without byte shuffle) is read, "
            "since only its inflation can be bounded: export it again with gzip or uncompressed"
        )
    return filters


def _inflate_rows(dataset, start: int, stop: int, out: np.ndarray, name: str, filters: tuple[int, ...]) -> None:
    """Rows start..stop of a gzip-chunked dataset into `out`, each chunk inflated to its declared size at the most."""
    chunks, shape, stored = dataset.chunks, dataset.shape, dataset.dtype
    chunk_bytes = int(np.prod(chunks)) * stored.itemsize
    corners = [range(start - start % chunks[0], stop, chunks[0])]
    corners += [range(0, n, c) for n, c in zip(shape[1:], chunks[1:], strict=True)]
    for corner in itertools.product(*corners):
        try:
            skipped, raw = dataset.id.read_direct_chunk(corner)
        except RuntimeError:  # a chunk never written reads as the fill value, as HDF5 gives it
            block = np.full(chunks, dataset.fillvalue, dtype=stored)
        else:
            applied = [f for bit, f in enumerate(filters) if not skipped >> bit & 1]  # a set bit: filter skipped
            try:  # one byte more than the chunk holds tells a stream that goes on past it
                data = zlib.decompressobj().decompress(raw, chunk_bytes + 1) if DEFLATE in applied else raw
            except zlib.error:
                data = b""
            if len(data) != chunk_bytes:
                raise PipelineError(f"{name}: a compressed chunk is damaged; fetch the file again")
            if SHUFFLE in applied:  # shuffle stored byte 0 of every value, then byte 1, and so on: undo it
                data = np.frombuffer(data, np.uint8).reshape(stored.itemsize, -1).T.tobytes()
            block = np.frombuffer(data, stored).reshape(chunks)
        first, last = max(corner[0], start), min(corner[0] + chunks[0], stop)
        across = [(c, min(c + k, n)) for c, k, n in zip(corner[1:], chunks[1:], shape[1:], strict=True)]
        target = (slice(first - start, last - start), *(slice(low, high) for low, high in across))
        source = (slice(first - corner[0], last - corner[0]), *(slice(0, high - low) for low, high in across))
        out[target] = block[source]


@contextmanager
def open_h5(path: Path) -> Iterator:
    """`path` opened with h5py, refused before any data is read unless all of it is stored inside it (outside_data).

    Inside the block, an error that h5py raises (the HDF5 library failing on the file's bytes) ends in one line.
    """
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path} is not a readable HDF5 file ({error}); check the path or fetch it again") from None
    with h5:
        try:
            clouds = max_clouds()  # before the whole file is walked: that alone takes seconds for 100,000 groups
            if len(h5) > clouds:
                raise PipelineError(
                    f"{path}: {len(h5):,} groups, more than the {clouds:,} point clouds one file may hold; if it is "
                    "genuine, raise the limit with MNIST3D_MAX_CLOUDS"
                )
            problem = outside_data(h5)
            if problem:
                raise PipelineError(f"{path}: {problem}")
            yield h5
        except H5PY_ERRORS as error:
            if not raised_by_h5py(error):
                raise
            detail = (str(error).strip().splitlines() or [""])[0][:200]
            raise PipelineError(
                f"{path} is damaged, HDF5 cannot read it ({detail}); fetch or export it again"
            ) from None


def raised_by_h5py(error: BaseException) -> bool:
    """Whether `error` comes from inside h5py, where it stands for the HDF5 library failing on a file."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and trace.tb_frame.f_globals.get("__name__", "").startswith("h5py")


def outside_data(h5) -> str | None:
    """What in an open HDF5 file is not stored in it, or None: a soft, external or user-defined link, or a dataset
    whose data is in external raw files or mapped from other files (virtual).

    Any of them could make a read open another file, a FIFO among them (which blocks for ever), so the whole file is
    checked once, where it is opened. Only hard links are followed, and no data is read.
    """
    from h5py import h5d, h5l, h5o

    most_links = LINKS_PER_CLOUD * max_clouds()
    kinds = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link (to another file)"}
    fix, visited, failed = "only data stored in the file is read, export it again", 0, []

    def visit(name: bytes, link) -> str | None:
        nonlocal visited
        visited += 1
        if visited > most_links:
            return f"more than {most_links:,} links; is it a 3D MNIST file?"
        shown = name.decode("utf-8", "backslashreplace")
        if link.type != h5l.TYPE_HARD:
            return f"{shown} is {kinds.get(link.type, 'a user-defined link')}; {fix}"
        try:
            item = h5o.open(h5.id, name)
            plist = item.get_create_plist() if isinstance(item, h5d.DatasetID) else None
        except H5PY_ERRORS as error:  # raised here, h5py would lose it: it is raised again after the visit
            failed.append(error)
            return "failed"
        if plist is not None and plist.get_external_count():
            return f"{shown} is stored outside the file (HDF5 external storage); {fix}"
        if plist is not None and plist.get_layout() == h5d.VIRTUAL:
            return f"{shown} is a virtual dataset (its data is mapped from other files); {fix}"
        return None

    problem = h5.id.links.visit(visit, info=True)
    if failed:
        raise failed[0]
    return problem


def read_vectors(path: str | os.PathLike) -> dict[str, Split]:
    """Read and check both splits of a vectors file (the Kaggle full_dataset_vectors.h5 schema)."""
    path = regular_file(path, "run the fetch stage first (dvc repro fetch)")
    with reading(path), open_h5(path) as h5:
        missing = [k for s in SPLITS for k in (f"X_{s}", f"y_{s}") if k not in h5]
        if missing:
            raise PipelineError(f"{path}: missing datasets {', '.join(missing)}; is this full_dataset_vectors.h5?")
        datasets = {s: (h5_dataset(h5, f"X_{s}", path.name), h5_dataset(h5, f"y_{s}", path.name)) for s in SPLITS}
        splits = {
            s: Split(read_rows(x, name=f"{path} X_{s}"), read_rows(y, name=f"{path} y_{s}"))
            for s, (x, y) in datasets.items()
        }
    for name, split in splits.items():
        check_split(split.x, split.y, f"{path.name} {name}")
    return splits


def read_point_clouds(
    path: str | os.PathLike, rows: Sequence[int] | None = None, dtype=np.float32
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The clouds of a Kaggle point-cloud file as (3, N) C-contiguous arrays, and the labels (None if unlabelled).

    Groups "0", "1", ... in that order; `rows` picks some (none: every one). Every group's structure,
    declared size and label is checked before any points are read, in one pass over the file.
    """
    import h5py

    path = regular_file(path, "fetch the data again, or pass a 3D MNIST point-cloud file")
    with reading(path), open_h5(path) as h5:
        groups = dict(h5.items())
        total, labels, datasets = 0, [], []
        for i in range(len(groups)):
            group = groups.get(str(i))
            if not isinstance(group, h5py.Group):
                raise PipelineError(
                    f"{path}: group {i} is missing or not a group; is this a 3D MNIST point-cloud file?"
                )
            points = h5_dataset(group, "points", f"{path} group {i}")
            if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
                raise PipelineError(f"{path} group {i}: points have shape {points.shape}, expected (N, 3) with N > 0")
            total += points.size * np.dtype(dtype).itemsize
            labels.append(group.attrs.get("label"))
            datasets.append(points)
        check_size(total, f"{path}: the points of all groups as {np.dtype(dtype)}", times=CLOUDS_TIMES)
        label_array = None
        unlabelled = [i for i, label in enumerate(labels) if label is None]
        if 0 < len(unlabelled) < len(labels):  # never drop the labels of the others silently
            raise PipelineError(
                f"{path}: group {unlabelled[0]} has no label attribute but others have one; label every group or none"
            )
        if not unlabelled:
            try:
                label_array = np.array(labels)
            except ValueError:  # labels of different shapes
                raise PipelineError(f"{path}: the group labels are not single integers; fetch it again") from None
            if label_array.shape != (len(labels),):
                raise PipelineError(f"{path}: the group labels are not single integers; fetch it again")
            check_labels(label_array, f"{path} labels")
        clouds = []
        for i in range(len(groups)) if rows is None else rows:
            # Axis-major (3, N): every per-axis step of training then runs over contiguous memory.
            clouds.append(axis_major(datasets[i], dtype, f"{path} group {i} points"))
            if not np.isfinite(clouds[-1]).all():
                raise PipelineError(f"{path} group {i}: points hold NaN or Inf (as {np.dtype(dtype)}); fetch it again")
    return clouds, label_array


def axis_major(dataset, dtype, name: str) -> np.ndarray:
    """All of an (N, k) h5 dataset as a C-contiguous (k, N) array of `dtype` (values past its range become Inf)."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(read_rows(dataset, name=name).astype(dtype).T)


def read_paired_clouds(
    path: str | os.PathLike, y: np.ndarray, rows: Sequence[int] | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """The clouds of a point-cloud file (every one, or `rows`) and their labels, refused unless there is one cloud
    per (original, rotated) pair of the vectors' labels `y`, labelled as that pair."""
    clouds, labels = read_point_clouds(path, rows)
    if labels is None:
        raise PipelineError(f"{path}: some groups have no label; is it a 3D MNIST point-cloud file? fetch it again")
    check_cloud_labels(labels, y, Path(path).name)
    return clouds, labels


def read_source_clouds(path: Path, y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every cloud of the training point-cloud file, paired with `y`; none where the source has no such file."""
    if file_kind(path) is None:
        return [], np.empty(0, dtype=np.int64)
    return read_paired_clouds(path, y)
