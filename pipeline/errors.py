"""One-line errors for problems the user can fix, and the entry point every stage uses."""

import atexit
import ctypes
import logging
import os
import runpy
import select
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.report import visible

DEBUG_VARIABLE = "PIPELINE_DEBUG"


class PipelineError(Exception):
    """Bad params or bad data: shown as one line, without a traceback."""


class Stopped(BaseException):
    """SIGTERM arrived (from `kill`, `dvc queue kill` or the death of `dvc repro`): the
    stage stops the way Ctrl-C stops it. Its message is the signal's name."""


# prctl(2): the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1

_watching_dvc = False


class _VisibleFormatter(logging.Formatter):
    """Messages with control characters escaped: a column name or path from the user's
    files cannot move the cursor, clear the terminal or forge a second line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))


def raise_stopped(signal_number: int, frame: object) -> None:
    raise Stopped(signal.Signals(signal_number).name)


def stop_with_dvc() -> None:
    """Under DVC on Linux, stop this stage with SIGTERM when the `dvc` process that
    started it dies: killed, it cannot stop the stage, which would otherwise go on
    writing outputs that nothing records. By hand, a stage outlives its shell (`nohup`).

    DVC starts a stage through `$SHELL -c` (`/bin/sh` where SHELL is unset). bash and
    zsh replace themselves with the command; dash forks it and waits, so the stage's
    parent is then a shell that outlives `dvc`. The kernel's parent-death signal covers
    the first case; a thread watching the `dvc` process covers the second.

    Through the warm worker, the client (`pipeline.client`) is DVC's child and watches
    `dvc` this way, and forwards the signal to the stage; the stage's own parent is then
    the worker, whose environment has no `DVC_STAGE`, so the stage stops when either
    ends. Called twice in one process (a client that falls back to running the stage
    itself), it arranges this once.
    """
    global _watching_dvc
    if not sys.platform.startswith("linux") or not os.environ.get("DVC_STAGE"):
        return
    if _watching_dvc:
        return
    _watching_dvc = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # without prctl the stage runs on, as before
    owner = _dvc_process(os.getppid(), os.environ["DVC_STAGE"])
    if owner != os.getppid():
        threading.Thread(target=_stop_when_ended, args=(owner,), daemon=True).start()


def _dvc_process(pid: int, stage: str) -> int:
    """The nearest ancestor, from `pid` up, that is not part of the stage's command:
    DVC gives the command's processes (a shell, then this one) `DVC_STAGE`, and not
    itself."""
    while pid > 1:
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return pid
        if f"DVC_STAGE={stage}".encode() not in environment:
            return pid
        pid = parent
    return pid


def _stop_when_ended(pid: int) -> None:
    """Send this process SIGTERM once process `pid` has ended (a pidfd becomes readable
    then: no polling, no confusion with a later process given the same number)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)
        return
    except (OSError, AttributeError):
        return  # a kernel without pidfds (before 5.3): the stage runs on, as before
    select.select([descriptor], [], [])
    os.kill(os.getpid(), signal.SIGTERM)


# What a stopped stage tells its user; commands that are no stage say their own.
AFTER_A_STOPPED_STAGE = (
    "every output is the previous one or a complete new one, and `dvc repro` finishes the rest"
)


def run_stage(main: Callable[[], None], after_stop: str = AFTER_A_STOPPED_STAGE) -> None:
    """Run a stage's `main`: a `PipelineError` becomes one line and exit code 2, Ctrl-C
    or SIGTERM one line (`after_stop` says what to do next) and 128 + the signal's
    number (130, 143)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VisibleFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # Signal handlers belong to the main thread; a stage called in-process (tests)
    # gets its caller's handler back.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_stopped) if in_main_thread else None
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
        exit_stopped(stop, after_stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    exit_without_teardown(main)


def exit_stopped(
    stop: KeyboardInterrupt | Stopped, after_stop: str = AFTER_A_STOPPED_STAGE
) -> None:
    """End the program after Ctrl-C or SIGTERM: one line, and 128 + the signal's number."""
    name = str(stop) if isinstance(stop, Stopped) else "SIGINT"
    how = "Ctrl-C (SIGINT)" if name == "SIGINT" else name
    sys.stderr.write(f"error: stopped by {how}; {after_stop}\n")
    sys.exit(128 + signal.Signals[name].value)


def run_stage_module(module: str) -> None:
    """Run `module` as `python -m module` would, except that Ctrl-C or SIGTERM while it
    imports its libraries (TensorFlow, MLflow: seconds) ends it as `run_stage` ends a
    stage, with one line and 130 or 143, instead of a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_stopped)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except (KeyboardInterrupt, Stopped) as stop:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        exit_stopped(stop)


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
