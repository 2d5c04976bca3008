"""The one error type a person can act on, and the wrapper that turns it into one line."""

from __future__ import annotations

import sys
from collections.abc import Callable


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
