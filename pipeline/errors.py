"""One-line errors for problems the user can fix, and the entry point every stage uses."""

import logging
import os
import sys
from collections.abc import Callable

DEBUG_VARIABLE = "PIPELINE_DEBUG"


class PipelineError(Exception):
    """Bad params or bad data: shown as one line, without a traceback."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning a `PipelineError` into one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        main()
    except PipelineError as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
