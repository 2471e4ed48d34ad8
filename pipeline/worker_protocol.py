"""Where the warm worker listens, what it must match, and the messages it exchanges.

Shared by the thin client (`pipeline.client`) and the worker (`pipeline.worker`); like
them it imports only the standard library.
"""

import hashlib
import json
import os
import socket
import stat
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

# `PIPELINE_WORKER=0` (or off, false, no) runs every stage in its own process, as
# `python -m pipeline.<stage>` does.
WORKER_VARIABLE = "PIPELINE_WORKER"
OFF_VALUES = {"0", "off", "false", "no"}

# Variables the preloaded libraries read while being imported (TensorFlow's threads and
# log level, Keras' backend and home, BLAS and OpenMP threads, CUDA devices, Python's own
# hash seed and paths, the locale): a worker started under other values would give the
# stage a library configured differently from what it would get by itself.
IMPORT_VARIABLES = (
    "PYTHON",
    "TF_",
    "KERAS",
    "XLA_",
    "CUDA",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "LD_",
    "LANG",
    "LC_",
    "HOME",
)

# The files whose change means the environment was (or is about to be) synced anew.
LOCK_FILES = ("uv.lock", "pyproject.toml")

# sockaddr_un's sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

LENGTH = struct.Struct("!I")
# A worker started while another holds the environment's lock exits with this code.
ANOTHER_WORKER = 3


def worker_enabled(environment: dict[str, str]) -> bool:
    """Whether stages go to the warm worker (the default) or run in their own process."""
    return environment.get(WORKER_VARIABLE, "").strip().lower() not in OFF_VALUES


def socket_directory() -> Path:
    """The user's private directory for the worker's socket: `$XDG_RUNTIME_DIR` where the
    session has one, a directory of the user's own under the temporary directory
    otherwise."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "pipeline-worker"
    return Path(tempfile.gettempdir()) / f"pipeline-worker-{os.getuid()}"


def private_directory(directory: Path) -> bool:
    """Create `directory` readable by its owner only; False when it exists but is a
    link, someone else's, or open to others (then no worker is used)."""
    try:
        directory.mkdir(mode=0o700, parents=False, exist_ok=True)
        status = directory.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(status.st_mode)
        and status.st_uid == os.getuid()
        and stat.S_IMODE(status.st_mode) & 0o077 == 0
    )


def socket_path() -> Path | None:
    """The socket of the worker for this Python environment, or None where no private
    place for it exists. One worker per user and environment: `./run` keeps the
    environment in the repository (`.venv`), and the temporary copies that queued
    experiments run in use that same environment, hence that same worker."""
    directory = socket_directory()
    if not private_directory(directory):
        return None
    environment = os.path.realpath(sys.prefix).encode(errors="surrogateescape")
    path = directory / f"{hashlib.sha256(environment).hexdigest()[:16]}.sock"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return None
    return path


def fingerprint(directory: Path, environment: dict[str, str]) -> dict[str, Any]:
    """What a preloaded library depends on: the interpreter and its options, the import
    path (less its first entry, the caller's directory), when each directory of
    installed packages last changed, the variables read at import, and the lock files in
    `directory`."""
    installed = {}
    # Installing or removing a package changes its directory; the standard library's
    # never change, and a source directory on PYTHONPATH changes with every file.
    for entry in sys.path[1:]:
        if Path(entry).name in ("site-packages", "dist-packages"):
            try:
                installed[entry] = os.stat(entry).st_mtime_ns
            except OSError:
                installed[entry] = None
    locks = {}
    for name in LOCK_FILES:
        try:
            locks[name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        except OSError:
            locks[name] = None
    return {
        "executable": os.path.realpath(sys.executable),
        "options": repr((sys.flags, sys._xoptions, sys.warnoptions)),
        "path": sys.path[1:],
        "installed": installed,
        "variables": {
            key: value
            for key, value in sorted(environment.items())
            if key.startswith(IMPORT_VARIABLES)
        },
        "locks": locks,
    }


def connect(path: Path) -> socket.socket | None:
    """A connection to the worker listening at `path`; None when none listens."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(os.fspath(path))
    except OSError:
        connection.close()
        return None
    return connection


def peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    return struct.unpack("3i", credentials)[1]


def send_message(
    connection: socket.socket, message: dict[str, Any], descriptors: list[int] = ()
) -> None:
    """Send one message (its length, then JSON); `descriptors` travel with its first
    bytes (SCM_RIGHTS)."""
    body = json.dumps(message).encode()
    data = LENGTH.pack(len(body)) + body
    sent = socket.send_fds(connection, [data], list(descriptors)) if descriptors else 0
    if sent < len(data):
        # Not sendall(b""): it still sends once, and fails (EPIPE) if the worker has
        # already read the whole message, answered and closed.
        connection.sendall(data[sent:])


def receive_message(
    connection: socket.socket, max_descriptors: int = 0
) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors that came with it; None at the end of the stream.
    Reads exactly the message: what follows it (signals for the stage) stays unread."""
    if max_descriptors:
        head, descriptors, _, _ = socket.recv_fds(connection, LENGTH.size, max_descriptors)
    else:
        head, descriptors = connection.recv(LENGTH.size), []
    if head:
        head += _receive_exactly(connection, LENGTH.size - len(head)) or b""
    if len(head) < LENGTH.size:
        return None, descriptors
    body = _receive_exactly(connection, LENGTH.unpack(head)[0])
    if body is None:
        return None, descriptors
    return json.loads(body), descriptors


def _receive_exactly(connection: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        more = connection.recv(size - len(data))
        if not more:
            return None
        data += more
    return data
