"""One-line errors for problems the user can fix, and the entry point every stage uses."""

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable

from pipeline.report import visible

DEBUG_VARIABLE = "PIPELINE_DEBUG"


class PipelineError(Exception):
    """Bad params or bad data: shown as one line, without a traceback."""


class _VisibleFormatter(logging.Formatter):
    """Messages with control characters escaped: a column name or path from the user's
    files cannot move the cursor, clear the terminal or forge a second line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning a `PipelineError` into one line and exit code 2."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VisibleFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        main()
    except PipelineError as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        sys.stderr.write(f"error: {visible(str(error))}\n")
        sys.exit(2)
    exit_without_teardown(main)


def exit_without_teardown(main: Callable[[], None]) -> None:
    """End a stage run as a program (`python -m pipeline.<stage>`) once `main` succeeded,
    skipping the interpreter's teardown; return when `main` was called in-process.

    Freeing TensorFlow's and MLflow's modules object by object costs about a second per
    stage after the work is done. Nothing is lost by skipping it: every output file is
    fsynced before its rename (`files.atomic_path`), and MLflow's `end_run` waits for
    any asynchronous logging. What the interpreter does before its teardown still
    runs, in its order: join other threads, then the exit handlers, which flush
    logging, remove MLflow's temporary directories and stop worker processes.
    """
    if main.__module__ != "__main__":
        return
    threading._shutdown()
    atexit._run_exitfuncs()
    status = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # What Python itself returns when it cannot flush stdout at exit.
            status = 120
    os._exit(status)
