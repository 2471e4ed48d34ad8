"""Run a stage in the warm worker, or in this process where there is none:
`python -m pipeline.client pipeline.<stage>`, the command of each stage in dvc.yaml.

The worker (`pipeline.worker`) has imported TensorFlow, MLflow and the rest once and
forks a fresh child per stage; this client imports only the standard library, hands the
child its directory, environment, standard streams and arguments, forwards Ctrl-C and
SIGTERM to it and ends with its exit code. `PIPELINE_WORKER=0` turns the worker off.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.errors import (
    Stopped,
    exit_stopped,
    raise_stopped,
    run_stage_module,
    stop_with_dvc,
)
from pipeline.worker_protocol import (
    ANOTHER_WORKER,
    WORKER_VARIABLE,
    connect,
    fingerprint,
    receive_message,
    send_message,
    socket_path,
    worker_enabled,
)

# `pipeline.<stage>` in full: the client's command line then names the stage, for `ps`
# and for what looks for a stage among processes.
STAGE_MODULE = re.compile(r"pipeline\.[a-z_][a-z0-9_]*")
# How long a worker this client started may take to listen (it does before importing
# anything; seconds only on a machine under heavy load).
STARTING_SECONDS = 30
# The signals a user or DVC stops a stage with; each is forwarded to the stage.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class WorkerLost(Exception):
    """The worker ended while the stage ran (killed): the stage's end is unknown."""


def stream_settings(stream: object) -> dict[str, object] | None:
    """How Python set up one of this process's standard streams, for the child to set
    its own up alike (a terminal's stdout is line-buffered, a pipe's is not)."""
    if stream is None or not hasattr(stream, "encoding"):
        return None
    return {
        "encoding": stream.encoding,
        "errors": stream.errors,
        "line_buffering": getattr(stream, "line_buffering", False),
        "write_through": getattr(stream, "write_through", False),
    }


def request_for(module: str) -> dict[str, object]:
    """Everything the worker's child takes over from this process besides its streams."""
    umask = os.umask(0)
    os.umask(umask)
    directory = os.getcwd()
    return {
        "module": module,
        "argv": sys.argv,
        "directory": directory,
        "environment": dict(os.environ),
        "path": sys.path,
        "umask": umask,
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "streams": [stream_settings(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
        "fingerprint": fingerprint(Path(directory), dict(os.environ)),
        # Ask the child to say when the stage starts and ends: a worker still importing
        # may take the request before it can start the stage.
        "announce": True,
    }


def standard_descriptors() -> list[int]:
    """Descriptors 0, 1 and 2 to pass on; /dev/null in place of a closed one."""
    descriptors = []
    for number in (0, 1, 2):
        try:
            os.fstat(number)
            descriptors.append(number)
        except OSError:
            descriptors.append(os.open(os.devnull, os.O_RDWR))
    return descriptors


def start_worker(path: Path) -> subprocess.Popen | None:
    """Start a worker in the background, detached from this process's session and
    streams (DVC waits for a stage's streams to close); None where none could start."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DVC_")}
    try:
        log = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return None  # no worker: every stage runs by itself
    try:
        return subprocess.Popen(
            [
                sys.executable,
                *subprocess._args_from_interpreter_flags(),
                "-m",
                "pipeline.worker",
                "serve",
            ],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    except OSError:
        return None  # no worker: every stage runs by itself
    finally:
        os.close(log)


def connect_to_new_worker(path: Path) -> socket.socket | None:
    """Start a worker and connect to it as soon as it listens, which it does before its
    imports; None when it ends first (a worker cannot run here) or never listens."""
    worker = start_worker(path)
    if worker is None:
        return None
    deadline = time.monotonic() + STARTING_SECONDS
    while time.monotonic() < deadline:
        connection = connect(path)
        if connection is not None:
            return connection
        # ANOTHER_WORKER: one started at the same moment (parallel queued experiments)
        # holds the lock, and listens there next.
        if worker.poll() not in (None, ANOTHER_WORKER):
            return None
        time.sleep(0.01)
    return None


def run_in_worker(module: str) -> int | None:
    """The wait status of `module` run in the worker's child; None when no worker ran
    it. Where none listens, this stage starts one and waits for it: the worker imports
    the libraries once, instead of this stage and the worker both importing them. A
    worker that refuses (it saw another environment) or ends before the stage started
    leaves the stage to run by itself, and a fresh worker starts for the next stages."""
    path = socket_path()
    if path is None:
        return None
    connection = connect(path) or connect_to_new_worker(path)
    if connection is None:
        return None
    stop_with_dvc()
    with connection:
        status = run_through(connection, module)
    if status is None:
        start_worker(path)
    return status


def run_through(connection: socket.socket, module: str) -> int | None:
    """Hand `module` to the worker on `connection` and wait for its wait status,
    forwarding signals meanwhile; None when the worker refused or closed before taking
    the request."""
    received: list[int] = []

    def forward(number: int, frame: object) -> None:
        received.append(number)
        try:
            connection.send(bytes([number]))
        except OSError:
            pass  # the worker ended: the reply says how

    # A signal this process ignores (`nohup`) would not have stopped the stage either.
    previous = {
        number: signal.signal(number, forward)
        for number in FORWARDED
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    started = False
    try:
        try:
            send_message(connection, request_for(module), standard_descriptors())
        except OSError:
            return None  # the worker closed before taking the request: nothing ran
        while True:
            try:
                reply, _ = receive_message(connection)
            except OSError:
                reply = None
            if reply is None or "started" not in reply:
                break
            started = True
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if reply is None and started:
        raise WorkerLost
    if reply is not None and "status" in reply:
        return reply["status"]
    if received:
        # Stopped before any stage started: end as the stage would have.
        name = signal.Signals(received[-1]).name
        raise KeyboardInterrupt if name == "SIGINT" else Stopped(name)
    return None


def exit_with(status: int) -> None:
    """End as the child ended: with its exit code, or killed by its signal."""
    code = os.waitstatus_to_exitcode(status)
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def main() -> None:
    if len(sys.argv) < 2 or not STAGE_MODULE.fullmatch(sys.argv[1]):
        sys.stderr.write("usage: python -m pipeline.client pipeline.<stage> [arguments]\n")
        sys.exit(2)
    module = sys.argv[1]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    signal.signal(signal.SIGTERM, raise_stopped)
    status = None
    if worker_enabled(dict(os.environ)) and sys.platform.startswith("linux"):
        try:
            status = run_in_worker(module)
        except (KeyboardInterrupt, Stopped) as stop:
            exit_stopped(stop)
        except WorkerLost:
            sys.stderr.write(
                "error: the warm worker ended while the stage ran; run it again, or "
                f"without the worker ({WORKER_VARIABLE}=0)\n"
            )
            sys.exit(1)
    if status is not None:
        exit_with(status)
    run_stage_module(module)


if __name__ == "__main__":
    main()
