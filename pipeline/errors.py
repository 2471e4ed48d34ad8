"""One-line errors for problems the user can fix, and the entry point every stage uses."""

import atexit
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from pipeline.report import visible

DEBUG_VARIABLE = "PIPELINE_DEBUG"


class PipelineError(Exception):
    """Bad params or bad data: shown as one line, without a traceback."""


class Stopped(BaseException):
    """SIGTERM arrived (from `kill`, `dvc queue kill` or the death of `dvc repro`): the
    stage stops the way Ctrl-C stops it. Its message is the signal's name."""


# prctl(2): the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1


class _VisibleFormatter(logging.Formatter):
    """Messages with control characters escaped: a column name or path from the user's
    files cannot move the cursor, clear the terminal or forge a second line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))


def _raise_stopped(signal_number: int, frame: object) -> None:
    raise Stopped(signal.Signals(signal_number).name)


def stop_with_dvc() -> None:
    """Under DVC on Linux, have the kernel send SIGTERM when the `dvc` process that
    started this stage dies: killed, it cannot stop the stage, which would otherwise
    go on writing outputs that nothing records. By hand, a stage outlives its shell
    (`nohup`)."""
    if not sys.platform.startswith("linux") or not os.environ.get("DVC_STAGE"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # without prctl the stage runs on, as before


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`: a `PipelineError` becomes one line and exit code 2, Ctrl-C
    or SIGTERM one line and 128 + the signal's number (130, 143)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VisibleFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # Signal handlers belong to the main thread; a stage called in-process (tests)
    # gets its caller's handler back.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if in_main_thread else None
    stop_with_dvc()
    try:
        main()
    except PipelineError as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        sys.stderr.write(f"error: {visible(str(error))}\n")
        sys.exit(2)
    except (KeyboardInterrupt, Stopped) as stop:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        name = str(stop) if isinstance(stop, Stopped) else "SIGINT"
        how = "Ctrl-C (SIGINT)" if name == "SIGINT" else name
        sys.stderr.write(
            f"error: stopped by {how}; every output is the previous one or a complete "
            "new one, and `dvc repro` finishes the rest\n"
        )
        sys.exit(128 + signal.Signals[name].value)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
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
