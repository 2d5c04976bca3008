"""The one error type a person can act on, and the wrapper that turns it into one line."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUG = "MNIST3D_DEBUG"  # set to 1 to see the traceback of an unexpected error


class PipelineError(Exception):
    """A fault a person can fix; the message names the thing and the fix."""


def printable(text: str) -> str:
    """`text` with each character that is not printable (a newline, a tab, a terminal escape, a bidi control) written
    as its Python escape, as repr() does: a file name can hold any of them, and a line must stay one line of text."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Mark what is being read, so an unexpected error inside the block names the file (the innermost wins)."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, PipelineError) and not hasattr(error, "mnist3d_reading"):
            error.mnist3d_reading = str(path)
        raise


def unexpected_line(error: BaseException, name: str) -> str:
    """The one line for an error nobody foresaw: what was being read (or the stage), and how to see more."""
    where = getattr(error, "mnist3d_reading", None)
    place = f"while reading {where}" if where else f"in {name}"
    detail = (str(error).strip().splitlines() or [""])[0][:200]
    return (
        f"unexpected {type(error).__name__} {place}" + (f" ({detail})" if detail else "") + "; this is a bug or an "
        f"input the pipeline does not handle: please report it, and set {DEBUG}=1 to see the traceback"
    )


def run_stage(main: Callable[[], None], name: str | None = None) -> None:
    """Run a stage's main; expected faults exit 1 with one line and no traceback, and so do unexpected ones.

    With MNIST3D_DEBUG=1 an unexpected error shows its traceback instead.
    """
    name = name or f"the {Path(sys.argv[0]).stem} stage"
    try:
        main()
    except PipelineError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written, run the stage again", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # the last resort: whatever slipped past the checks still ends in one line
        if os.environ.get(DEBUG) == "1":
            raise
        print(f"error: {printable(unexpected_line(error, name))}", file=sys.stderr)
        sys.exit(1)


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what native code (TensorFlow's C++ start-up logging) writes to stderr inside the block.

    Those lines ignore TF_CPP_MIN_LOG_LEVEL and would bury the one `error: ` line. What was held back is
    printed after all if the block fails with anything but a PipelineError, so a real crash keeps its clues.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and TensorFlow's INFO and WARNING lines, read at its import
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        except PipelineError:
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
