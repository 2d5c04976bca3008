"""Atomic writes and checksums, so that no output is ever seen half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from mnist3d.errors import PipelineError

# The real 3D MNIST files are at most ~400 MB once unzipped (the vectors file is the largest); anything declared
# bigger is refused before it is read or inflated. Raise it with MNIST3D_MAX_FILE_MB (see docs/troubleshooting.md).
DEFAULT_MAX_FILE_MB = 1024


# Point-cloud groups one .h5 may hold: four times Kaggle's training file (5,000). Each group costs ~1 ms to look up
# and read, so a file of tiny clouds is refused before that work, not minutes into it. Raise it with MNIST3D_MAX_CLOUDS.
DEFAULT_MAX_CLOUDS = 20_000


def max_file_bytes() -> int:
    """The most bytes one input file, zip member, array or dataset may declare: MNIST3D_MAX_FILE_MB, 1024 by default."""
    return _limit("MNIST3D_MAX_FILE_MB", DEFAULT_MAX_FILE_MB, "megabytes") << 20


def max_clouds() -> int:
    """The most point-cloud groups one .h5 file may hold: MNIST3D_MAX_CLOUDS, 20,000 by default."""
    return _limit("MNIST3D_MAX_CLOUDS", DEFAULT_MAX_CLOUDS, "point clouds")


def _limit(variable: str, default: int, unit: str) -> int:
    """A positive whole number from the environment variable, or `default` where it is unset."""
    value = os.environ.get(variable, "")
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise PipelineError(f"{variable} must be a positive whole number of {unit}, got {value!r}")
    return int(value)


def check_size(nbytes: int, what: str, times: int = 1) -> None:
    """Refuse `what` if it declares more than `times` x max_file_bytes(), before anything of it is read."""
    limit = times * max_file_bytes()
    if nbytes > limit:
        raise PipelineError(
            f"{what} declares {nbytes / (1 << 20):,.0f} MB, over the {limit >> 20} MB limit on input files; "
            "if it is genuine, raise the limit with MNIST3D_MAX_FILE_MB"
        )


def regular_file(path: str | os.PathLike, missing: str) -> Path:
    """`path` if it is a regular file (symlinks followed); otherwise a PipelineError, `missing` saying what to do.

    Checked with stat before any open, so a FIFO or a device is never opened (a FIFO would block forever).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; {missing}") from None
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path} cannot be read ({unreadable(error)}); {missing}") from None
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{path} is a directory, not a file; {missing}")
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{path} is not a regular file (a pipe, socket or device); {missing}")
    return path


def file_kind(path: str | os.PathLike) -> str | None:
    """'file', 'directory', 'other' (a FIFO, socket or device) or None if nothing is there; symlinks followed.

    A path that cannot be looked up at all (a symlink loop, no permission, a NUL byte) is a PipelineError.
    """
    try:
        mode = Path(path).stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path} cannot be looked up ({unreadable(error)}); check the path") from None
    return "file" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else "other"


def unreadable(error: OSError | ValueError) -> str:
    """Why a path could not be looked up, in words: the OS's reason, or the NUL byte that no file name may hold."""
    if isinstance(error, ValueError):
        return "it holds a NUL byte, which no file name can"
    return error.strerror or type(error).__name__


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs; a killed one that nobody has reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc to ask: assume alive, so a live temp is never removed
    return state not in ("Z", "X")


def _remove_stale_temps(target: Path) -> None:
    """Remove temps of `target` left by a process that was killed (SIGKILL, power loss) before it could clean up."""
    for stale in target.parent.glob(f".{target.name}.*.tmp*"):
        pid = stale.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(stale)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(target: str | os.PathLike, directory: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: something else where it goes (a folder where a
    file goes, a pipe, a device), or a file standing where one of the folders above it must be."""
    target = Path(target)
    want = "folder" if directory else "file"
    kind = file_kind(target)
    if kind not in (None, "directory" if directory else "file"):
        found = {"file": "a file", "directory": "a folder"}.get(kind, "a pipe, socket or device")
        raise PipelineError(f"{target}: {found} stands where this output {want} goes; move it away")
    for folder in target.parents:
        kind = file_kind(folder)
        if kind == "directory":
            return
        if kind is not None:
            raise PipelineError(f"{target} cannot be written: {folder} is not a folder; move it away")


@contextmanager
def atomic_paths(files: Sequence[str | os.PathLike] = (), folders: Sequence[str | os.PathLike] = ()) -> Iterator[list]:
    """Yield a temporary path beside each output (the files', then the folders'); they replace the outputs together,
    and only if the block succeeds. A failure, even between two of the renames, leaves none of the outputs.

    Each temp is named `.<name>.<pid>.<random>.tmp`: never mistaken for an output, and removed by the next
    write of the same target if its process died without cleaning up.
    """
    targets = [(Path(target), False) for target in files] + [(Path(target), True) for target in folders]
    for target, directory in targets:
        check_writable(target, directory)
    created: list[Path] = []  # folders made for the outputs: a failed write leaves no empty folders behind either
    temps: list[Path] = []
    placed: list[Path] = []
    done = False
    try:
        for target, directory in targets:
            created += [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(target)
            temps.append(_make_temp(target, directory))
        yield temps
        for (target, directory), temp in zip(targets, temps, strict=True):
            if directory:
                _remove(target)  # a directory cannot be renamed over a non-empty one
            os.replace(temp, target)
            placed.append(target)
        done = True
    finally:
        for path in [*temps, *(placed if not done else ())]:
            if path.exists() or path.is_symlink():
                _remove(path)
        for folder in sorted(set(created), key=lambda folder: len(folder.parts), reverse=True) if not done else ():
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds (atomic_paths)."""
    with atomic_paths(folders=[target]) if directory else atomic_paths(files=[target]) as (temp,):
        yield temp


def _make_temp(target: Path, directory: bool) -> Path:
    """An empty temp file or folder beside `target`, in the same folder so that the final rename is atomic."""
    prefix = f".{target.name}.{os.getpid()}."
    if directory:
        temp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
        temp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the output should not be
        return temp
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(handle)
    Path(name).chmod(0o666 & ~_umask())  # mkstemp makes it private (0600); the output should not be
    return Path(name)


def copy_bounded(reader: BinaryIO, target: Path, what: str) -> None:
    """Copy a stream into `target`, stopping as soon as the bytes copied pass the input limit, whatever the source
    declared: a zip member may inflate past its header's size, and a link to a pseudo-file such as
    /proc/self/pagemap reports 0 bytes, then reads without end."""
    written, limit = 0, max_file_bytes()
    with open(target, "wb") as out:
        while block := reader.read(1 << 20):
            written += len(block)
            if written > limit:
                raise PipelineError(
                    f"{what} goes on past the {limit >> 20} MB limit on input files as it is copied, whatever size it "
                    "declared; if it is genuine, raise the limit with MNIST3D_MAX_FILE_MB"
                )
            out.write(block)


def write_json(target: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    write_json_files({target: data})


def write_json_files(files: dict[str | os.PathLike, Any]) -> None:
    """Write each path's data as indented JSON, all together: either every file appears, or none does."""
    with atomic_paths(files=list(files)) as temps:
        for temp, data in zip(temps, files.values(), strict=True):
            temp.write_text(json_text(data))


def json_text(data: Any) -> str:
    """`data` as the indented, key-sorted JSON every output of the pipeline uses."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
