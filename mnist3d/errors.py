"""The one error type a person can act on, and the wrapper that turns it into one line."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class PipelineError(Exception):
    """A fault a person can fix; the message names the thing and the fix."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; expected faults exit 1 with one line and no traceback."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written, run the stage again", file=sys.stderr)
        sys.exit(130)


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what native code (TensorFlow's C++ start-up logging) writes to stderr inside the block.

    Those lines ignore TF_CPP_MIN_LOG_LEVEL and would bury the one `error: ` line. What was held back is
    printed after all if the block fails with anything but a PipelineError, so a real crash keeps its clues.
    """
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
