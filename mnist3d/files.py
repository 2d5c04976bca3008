"""Atomic writes and checksums, so that no output is ever seen half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
