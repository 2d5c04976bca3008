"""Atomic writes and checksums, so that no output is ever seen half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist3d.errors import PipelineError

# The real 3D MNIST files are at most ~400 MB once unzipped (the vectors file is the largest); anything declared
# bigger is refused before it is read or inflated. Raise it with MNIST3D_MAX_FILE_MB (see docs/troubleshooting.md).
DEFAULT_MAX_FILE_MB = 1024


def max_file_bytes() -> int:
    """The most bytes one input file, zip member, array or dataset may declare: MNIST3D_MAX_FILE_MB, 1024 by default."""
    value = os.environ.get("MNIST3D_MAX_FILE_MB", "")
    if not value:
        return DEFAULT_MAX_FILE_MB << 20
    if not value.isdigit() or int(value) < 1:
        raise PipelineError(f"MNIST3D_MAX_FILE_MB must be a positive whole number of megabytes, got {value!r}")
    return int(value) << 20


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
    except OSError as error:
        raise PipelineError(f"{path} cannot be read ({error.strerror}); {missing}") from None
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{path} is a directory, not a file; {missing}")
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{path} is not a regular file (a pipe, socket or device); {missing}")
    return path


def file_kind(path: str | os.PathLike) -> str | None:
    """'file', 'directory', 'other' (a FIFO, socket or device) or None if nothing is there; symlinks followed."""
    try:
        mode = Path(path).stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return "file" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else "other"


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


@contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds.

    The temp is named `.<name>.<pid>.<random>.tmp`: never mistaken for an output, and removed by the next
    write of the same target if its process died without cleaning up.
    """
    target = Path(target)
    kind = file_kind(target)
    if kind not in (None, "directory" if directory else "file"):
        # os.replace would swap a device or a pipe for our file: never write over anything but our own kind of output
        raise PipelineError(
            f"{target} exists and is not a regular {'directory' if directory else 'file'}; refusing to replace it"
        )
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    # The temp sits in the same folder so that the final rename is atomic on one filesystem.
    prefix = f".{target.name}.{os.getpid()}."
    if directory:
        temp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
        temp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); the output should not be
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + target.suffix, dir=target.parent)
        os.close(handle)
        temp = Path(name)
        temp.chmod(0o666 & ~_umask())  # mkstemp makes it private (0600); the output should not be
    done = False
    try:
        yield temp
        if directory:
            _remove(target)  # a directory cannot be renamed over a non-empty one
        os.replace(temp, target)
        done = True
    finally:
        if temp.exists():
            _remove(temp)
        for folder in created if not done else ():  # a failed write leaves no empty folders behind either
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_json(target: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(target) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
