"""The PLY point-cloud format (ASCII and binary), for mnist3d.io.formats: vertices only, sizes checked first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist3d.errors import PipelineError, reading
from mnist3d.io.files import check_size

MAX_ASCII_BYTES = 64 << 20  # ASCII vertices are parsed into ~10x their size in Python objects
PLY_TYPES = {
    **dict.fromkeys(["char", "int8"], "i1"),
    **dict.fromkeys(["uchar", "uint8"], "u1"),
    **dict.fromkeys(["short", "int16"], "i2"),
    **dict.fromkeys(["ushort", "uint16"], "u2"),
    **dict.fromkeys(["int", "int32"], "i4"),
    **dict.fromkeys(["uint", "uint32"], "u4"),
    **dict.fromkeys(["float", "float32"], "f4"),
    **dict.fromkeys(["double", "float64"], "f8"),
}
PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def _ply_header(data: bytes, path: Path) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """The PLY format, its elements as (name, count, [(property, type)]), and the offset of the body."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise PipelineError(f"{path} is not a PLY file (it must start with 'ply' and have 'end_header')")
    body = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    fmt, elements = None, []
    for number, raw in enumerate(data[:end].decode("ascii", "replace").splitlines()[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        bad = PipelineError(f"{path}: bad PLY header line {number} {raw.strip()!r}; fix or re-export the file")
        if words[0] == "format":
            if len(words) < 2 or words[1] not in PLY_FORMATS:
                raise bad
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise bad
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if (
                not elements
                or len(words) < 3
                or not (words[1] == "list" or (words[1] in PLY_TYPES and len(words) == 3))
            ):
                raise bad
            if words[-1] in [p for p, _ in elements[-1][2]]:
                raise PipelineError(f"{path}: PLY property {words[-1]!r} is declared twice; re-export the file")
            elements[-1][2].append((words[-1], "list" if words[1] == "list" else words[1]))
        else:
            raise bad
    if fmt is None:
        raise PipelineError(f"{path}: the PLY header has no 'format' line; re-export the file")
    return fmt, elements, body


def read_ply(path: Path) -> np.ndarray:
    """The x y z vertices of an ASCII or binary PLY file as (N, 3); other elements (faces) are ignored."""
    check_size(path.stat().st_size, str(path))
    with reading(path):
        data = path.read_bytes()
        fmt, elements, offset = _ply_header(data, path)
        names = [name for name, _, _ in elements]
        if "vertex" not in names:
            raise PipelineError(f"{path}: the PLY header has no 'element vertex'; export the points as vertices")
        before, (_, count, properties) = elements[: names.index("vertex")], elements[names.index("vertex")]
        columns = [p for p, _ in properties]
        if not {"x", "y", "z"} <= set(columns):
            raise PipelineError(f"{path}: the PLY vertices have properties {columns}, need x, y and z")
        if count == 0:
            raise PipelineError(f"{path}: the PLY file has no vertices; export a cloud with at least one point")
        order = PLY_FORMATS[fmt]
        if order is None:
            if len(data) > MAX_ASCII_BYTES:
                raise PipelineError(f"{path} is over {MAX_ASCII_BYTES >> 20} MB of ASCII PLY; save it as binary PLY")
            lines = data[offset:].decode("ascii", "replace").splitlines()[sum(n for _, n, _ in before) :][:count]
            rows = [line.split() for line in lines]
            if len(rows) < count or any(len(r) != len(columns) for r in rows):
                raise PipelineError(
                    f"{path}: expected {count} vertex lines of {len(columns)} values after the header; "
                    "the file is cut short or damaged"
                )
            try:
                table = np.array(rows, dtype=np.float64)
            except ValueError:
                raise PipelineError(
                    f"{path}: a vertex line holds something that is not a number; re-export it"
                ) from None
            return table[:, [columns.index(axis) for axis in "xyz"]]
        if any(kind == "list" for _, _, props in [*before, elements[names.index("vertex")]] for _, kind in props):
            raise PipelineError(
                f"{path}: binary PLY with list properties before or in the vertices is not supported; save it as ASCII PLY"
            )
        for _, n, props in before:
            offset += n * np.dtype([(p, order + PLY_TYPES[t]) for p, t in props]).itemsize
        dtype = np.dtype([(p, order + PLY_TYPES[t]) for p, t in properties])
        if len(data) < offset + count * dtype.itemsize:
            raise PipelineError(f"{path}: the file ends before its {count} vertices; it is cut short, export it again")
        table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return np.stack([table[axis].astype(np.float64) for axis in "xyz"], axis=1)
