"""The warm worker: one process per user and Python environment that has imported the
heavy libraries once and forks a fresh child for each stage a client asks for.

`python -m pipeline.worker serve` (the client starts it), `python -m pipeline.worker
stop`. The worker never imports the stages' own code (`pipeline.*` but the worker's
modules): each child loads it from the client's directory, so an edit counts at once,
and a queued experiment's copy runs its own code.
"""

import argparse
import atexit
import ctypes
import fcntl
import gc
import importlib
import os
import select
import selectors
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.worker_protocol import (
    ANOTHER_WORKER,
    connect,
    fingerprint,
    peer_uid,
    receive_message,
    send_message,
    socket_path,
)

# Every third-party library a stage imports at its top. Measured on the 2-core machine
# (CPU seconds, in this order): NumPy, pandas, PyArrow and SciPy 1.0, scikit-learn and
# skops 0.5, TensorFlow and Keras 2.5 (Matplotlib comes with Keras), MLflow 0.9, and
# the SQLAlchemy stores that MLflow imports when `track` opens an SQLite or PostgreSQL
# store 0.5.
PRELOADED = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "scipy.stats",
    "sklearn.compose",
    "sklearn.datasets",
    "sklearn.impute",
    "sklearn.metrics",
    "sklearn.neural_network",
    "sklearn.preprocessing",
    "joblib",
    "skops.io",
    "pydantic",
    "yaml",
    "keras",
    "tensorflow",
    "matplotlib.pyplot",
    "mlflow",
    "mlflow.models",
    "mlflow.pyfunc",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)
# The stages that need only the first libraries of PRELOADED, and how many: a worker
# still importing the rest starts them as soon as those are in, in parallel with its
# other imports, so that a repro from scratch uses it from its second stage on
# (tests/test_worker.py checks that their modules import no later library).
# `train_keras` imports MLflow itself, in the background while it trains
# (pipeline.mlflow_models.preload_mlflow). Any other stage asked for meanwhile waits
# until every import is done.
EARLY_STAGES = {
    "pipeline.dataset": PRELOADED.index("keras"),
    "pipeline.split": PRELOADED.index("keras"),
    "pipeline.train_keras": PRELOADED.index("mlflow"),
}
# An idle worker (no stage running, none asked for) exits after this many seconds.
IDLE_SECONDS = 10 * 60
PR_SET_PDEATHSIG = 1


def preload(worker: "Worker | None" = None) -> None:
    """Import the libraries, without starting any of their runtimes: TensorFlow's thread
    pools and devices start on first use, in each child (a fork copies only the thread
    that forks; a pool started before it would hang the child). Between two imports,
    `worker` answers whoever has asked meanwhile."""
    # As pipeline.tensorflow_import sets it for a stage run by itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for number, name in enumerate(PRELOADED, start=1):
        importlib.import_module(name)
        if worker is not None:
            worker.imported = number
            answer_waiting(worker)


@dataclass
class Worker:
    """The listening socket and the running children: what a child must close."""

    path: Path
    lock: int
    listener: socket.socket
    selector: selectors.BaseSelector
    environment: dict[str, Any]
    socket_inode: int
    # pidfd -> (pid, the client's connection)
    children: dict[int, tuple[int, socket.socket]] = field(default_factory=dict)
    # Requests taken while importing, whose stage needs what is not imported yet: the
    # client's connection, the request and the client's standard streams.
    waiting: list[tuple[socket.socket, dict[str, Any], list[int]]] = field(default_factory=list)
    imported: int = 0  # how many of PRELOADED are imported
    serving: bool = True

    def stop_serving(self) -> None:
        """Let a fresh worker start at once; the running children finish here."""
        if not self.serving:
            return
        self.serving = False
        self.selector.unregister(self.listener)
        try:
            if os.stat(self.path).st_ino == self.socket_inode:
                self.path.unlink()  # a fresh worker's socket stays
        except OSError:
            pass
        self.listener.close()
        os.close(self.lock)


def open_worker(path: Path) -> Worker | None:
    """Take the environment's lock, listen, and import the libraries; None when another
    worker holds the lock. Clients may connect at once: the stages that need only the
    libraries imported so far start meanwhile, the others once all are imported."""
    lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None
    # Whoever wants the worker's pid (to kill it, or to count its CPU time) finds it here.
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    environment = fingerprint(Path.cwd(), dict(os.environ))
    # The directory it was started in may be a queued experiment's copy, soon deleted.
    os.chdir("/")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    previous_umask = os.umask(0o177)
    try:
        listener.bind(os.fspath(path))
    finally:
        os.umask(previous_umask)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    worker = Worker(path, lock, listener, selector, environment, os.stat(path).st_ino)
    preload(worker)
    while worker.waiting:
        start_child(worker, *worker.waiting.pop(0))
    return worker


def answer_waiting(worker: Worker) -> None:
    """While importing: take every request that has come, and start those whose stage
    needs only what is imported. (Their children report their own end to the client:
    the worker reaps them once it serves.)"""
    for waiting in list(worker.waiting):
        if worker.imported >= EARLY_STAGES.get(waiting[1]["module"], len(PRELOADED)):
            worker.waiting.remove(waiting)
            start_child(worker, *waiting)
    while worker.serving and select.select([worker.listener], [], [], 0)[0]:
        try:
            connection, _ = worker.listener.accept()
        except OSError:
            return  # out of descriptors, say: the client waits for the next try
        answer(worker, connection)


def serve(worker: Worker, idle_seconds: float) -> None:
    """Answer clients until idle for `idle_seconds` or told to stop, then wait for the
    running children."""
    while worker.serving or worker.children:
        events = worker.selector.select(None if worker.children else idle_seconds)
        if not events and not worker.children:
            break
        for key, _ in events:
            if key.fileobj is worker.listener:
                try:
                    connection, _ = worker.listener.accept()
                except OSError:
                    continue  # out of descriptors, say: the client runs the stage itself
                answer(worker, connection)
            else:
                report_end(worker, key.fd)
    worker.stop_serving()


def report_end(worker: Worker, pidfd: int) -> None:
    """A child ended: reap it and send its wait status to its client."""
    pid, connection = worker.children.pop(pidfd)
    worker.selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    try:
        send_message(connection, {"status": status})
    except OSError:
        pass  # the client is gone; the child has stopped because of that
    connection.close()


def answer(worker: Worker, connection: socket.socket) -> None:
    """Read one request and start its stage, or refuse it."""
    descriptors: list[int] = []
    try:
        connection.settimeout(10)
        if peer_uid(connection) != os.getuid():
            send_message(connection, {"refused": "another user"})
            connection.close()
            return
        request, descriptors = receive_message(connection, max_descriptors=3)
        if request is None or (not request.get("stop") and len(descriptors) != 3):
            connection.close()
            return
        if request.get("stop") or request["fingerprint"] != worker.environment:
            # Stop first, so that the fresh worker the client starts can take the lock.
            worker.stop_serving()
            send_message(connection, {"refused": "stopping"})
            connection.close()
            return
        connection.settimeout(None)
        if worker.imported < EARLY_STAGES.get(request["module"], len(PRELOADED)):
            worker.waiting.append((connection, request, descriptors))
            return
    except (OSError, ValueError, KeyError, TypeError) as error:
        # A client gone, or a request this worker cannot read: refused by silence.
        sys.stderr.write(f"worker: no answer to a request: {error!r}\n")
        connection.close()
        for descriptor in descriptors:
            os.close(descriptor)
        return
    start_child(worker, connection, request, descriptors)


def start_child(
    worker: Worker, connection: socket.socket, request: dict[str, Any], descriptors: list[int]
) -> None:
    """Fork the child that runs the request's stage."""
    try:
        # Nothing of the worker's may be left in buffers the child will write from.
        sys.stdout.flush()
        sys.stderr.flush()
        # The libraries' objects go where the garbage collector never looks: otherwise
        # each full collection in a child walks (and so copies, page by page) the whole
        # preloaded heap, some 0.4 s of CPU per stage with MLflow's SQLAlchemy stores.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            run_child(worker, connection, request, descriptors)
        # The worker's log: which stage each child ran, for whoever wonders.
        sys.stderr.write(f"worker: {pid} runs {request['module']} in {request['directory']}\n")
        sys.stderr.flush()
        pidfd = os.pidfd_open(pid)
        worker.children[pidfd] = (pid, connection)
        worker.selector.register(pidfd, selectors.EVENT_READ)
    except OSError as error:
        # No child could be forked: the client, told nothing, runs the stage itself.
        sys.stderr.write(f"worker: no answer to a request: {error!r}\n")
        if not any(other is connection for _, other in worker.children.values()):
            connection.close()
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def run_child(
    worker: Worker, connection: socket.socket, request: dict[str, Any], descriptors: list[int]
) -> None:
    """In the forked child: become the client's process for the stage, run it, exit.
    A client that asks (`announce`) hears from the child itself that the stage started
    and how it ended: at once, even while the worker is still importing."""
    code = 1
    announce = bool(request.get("announce"))
    try:
        become_client(worker, connection, request, descriptors)
        if announce:
            tell_client(connection, {"started": os.getpid()})
        code = run_module(request["module"])
    except BaseException:
        traceback.print_exc()
    finally:
        # The stage is over: a signal now (the client ends once told, which stops the
        # stage: forward_signals) must not turn its end into an error.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            if announce:
                # The wait status of an exit with `code`; a child killed before it gets
                # here is reported by the worker.
                tell_client(connection, {"status": (code & 0xFF) << 8})
        finally:
            os._exit(code)


def tell_client(connection: socket.socket, message: dict[str, Any]) -> None:
    try:
        send_message(connection, message)
    except OSError:
        pass  # the client has ended; the stage stops (forward_signals) or has ended


def become_client(
    worker: Worker, connection: socket.socket, request: dict[str, Any], descriptors: list[int]
) -> None:
    """Take the client's streams, directory, environment, import path and arguments;
    drop what belongs to the worker; stop when the client or the worker ends."""
    worker.selector.close()
    if worker.serving:
        worker.listener.close()
        os.close(worker.lock)
    for pidfd, (_, other) in worker.children.items():
        os.close(pidfd)
        other.close()
    # Other clients' connections and streams: a stage holding them would keep their
    # pipes open (DVC waits for a stage's streams to close).
    for other, _, streams in worker.waiting:
        other.close()
        for descriptor in streams:
            os.close(descriptor)
    for signal_number in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signal_number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The worker's death stops the stage, as SIGTERM would.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    for number, descriptor in enumerate(descriptors):
        os.dup2(descriptor, number)
        if descriptor != number:
            os.close(descriptor)
    adopt_output_streams(request["streams"][1:])
    os.chdir(request["directory"])
    os.environ.clear()
    os.environ.update(request["environment"])
    os.umask(request["umask"])
    try:
        os.setpriority(os.PRIO_PROCESS, 0, request["niceness"])
    except OSError:
        pass  # a client nicer than the worker can only make it nicer, not less
    sys.path[:] = request["path"]
    show_command_line([sys.executable, "-m", request["module"]])
    sys.argv[:] = request["argv"]
    # The stages' own code, the pipeline package included, comes from the client's copy.
    for name in [name for name in sys.modules if name.split(".")[0] == "pipeline"]:
        del sys.modules[name]
    importlib.invalidate_caches()
    threading.Thread(target=forward_signals, args=(connection,), daemon=True).start()


def show_command_line(arguments: list[str]) -> None:
    """Show `arguments` as this process's command line (/proc/<pid>/cmdline): `ps` then
    names the stage a child runs, and so does what checks that a publishing stage is
    still alive (pipeline.track). The kernel reads it from the memory that held the
    worker's own arguments: overwritten in place, cut to that length."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        # arg_start and arg_end, fields 48 and 49 of proc(5)'s stat, 46 and 47 here.
        start, end = int(fields[45]), int(fields[46])
        text = "\0".join(arguments).encode(errors="surrogateescape")[: end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            memory.write(text.ljust(end - start, b"\0"))
    except (OSError, ValueError, IndexError):
        pass  # the worker's command line stays: only `ps` and that check are less exact


def adopt_output_streams(settings: list[dict[str, Any] | None]) -> None:
    """Buffer stdout and stderr, now on the client's descriptors, as the client's are
    (a terminal's stdout is line-buffered, a pipe's is not). The worker's own objects are
    kept, so that libraries holding them (TensorFlow's and MLflow's log handlers) write
    to the client through the same buffers. Their encoding is the client's already: it
    follows from variables the worker matches (PYTHONIOENCODING, LANG, LC_*); changing
    it, like reconfiguring stdin, would seek, which a pipe refuses."""
    for stream, wanted in zip((sys.stdout, sys.stderr), settings, strict=True):
        if stream is not None and wanted is not None:
            stream.reconfigure(
                line_buffering=wanted["line_buffering"], write_through=wanted["write_through"]
            )


def forward_signals(connection: socket.socket) -> None:
    """Raise in this process each signal its client forwards; SIGTERM once the client
    has ended (killed: nothing else would stop the stage)."""
    while True:
        try:
            data = connection.recv(64)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        for number in data:
            os.kill(os.getpid(), number)


def run_module(module: str) -> int:
    """Run the stage as `python -m` would; its exit code."""
    try:
        from pipeline.errors import run_stage_module

        run_stage_module(module)
        code = 0
    except SystemExit as exit_request:
        code = exit_code(exit_request.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    # What the interpreter does before its teardown, which a stage skips anyway.
    threading._shutdown()
    atexit._run_exitfuncs()
    return code


def exit_code(code: object) -> int:
    """The exit code Python gives `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def pidfds_work() -> bool:
    """Whether the kernel has pidfds (Linux 5.3 and later), how the worker learns that a
    child ended; without them there is no worker, and stages run by themselves."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (OSError, AttributeError):
        return False
    return True


def stop() -> bool:
    """Ask this environment's worker to stop once its running stages end; whether one
    was running."""
    path = socket_path()
    connection = connect(path) if path is not None else None
    if connection is None:
        return False
    with connection:
        try:
            send_message(connection, {"stop": True})
            receive_message(connection)
        except OSError:
            return False  # it ended meanwhile
    return True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.worker", description=__doc__)
    parser.add_argument("action", choices=["serve", "stop"])
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS)
    arguments = parser.parse_args()
    if arguments.action == "stop":
        sys.stderr.write("worker: stopping\n" if stop() else "worker: none running\n")
        return
    path = socket_path()
    if path is None or not pidfds_work():
        sys.exit(1)
    worker = open_worker(path)
    if worker is None:
        sys.exit(ANOTHER_WORKER)
    serve(worker, arguments.idle_seconds)
    # Freeing TensorFlow's and MLflow's modules would only delay the exit.
    os._exit(0)


if __name__ == "__main__":
    main()
