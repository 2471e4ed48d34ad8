"""No MLflow run stays RUNNING: signals wait for the current store write to finish,
an interrupted publication ends its runs KILLED or FAILED, and the next publication
ends the runs of a publisher that died (kill -9) as KILLED."""

import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

# Tags every run carries, so that a later publication can tell whether its
# publisher is still alive.
TAG_HOST = "pipeline.host"
TAG_PID = "pipeline.pid"
# The publishing stage's module, as its command line names it.
PUBLISHER = b"pipeline.track"
# The most experiments or runs one search returns (MLflow's own limit): a store with
# more is read page by page.
PAGE_SIZE = 1000


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived: the runs end as KILLED, not FAILED or FINISHED.

    Its message is the signal's name, e.g. "SIGTERM".
    """


class _Signals:
    """SIGTERM/SIGINT handling that never interrupts a store write halfway.

    A signal raised inside SQLAlchemy can leave its session unusable, and then the
    runs cannot be marked KILLED. While publishing, a signal is only recorded and
    `checkpoint()` raises it between two writes.
    """

    deferring = False
    received: int | None = None


def _on_signal(signal_number: int, frame: object) -> None:
    if _Signals.deferring:
        _Signals.received = signal_number
        return
    raise Terminated(signal.Signals(signal_number).name)


def install_signal_handlers() -> None:
    # MLflow's exit hook does not run on signals; without these, a `dvc queue kill`
    # or Ctrl-C would leave the runs RUNNING forever.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


@contextmanager
def signals_deferred() -> Iterator[None]:
    _Signals.deferring, _Signals.received = True, None
    try:
        yield
    finally:
        _Signals.deferring = False


def checkpoint() -> None:
    """Raise a signal that arrived during the last write, now that it is complete."""
    if _Signals.received is not None:
        raise Terminated(signal.Signals(_Signals.received).name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The pid may have been reused by an unrelated process since.
    command_line = Path(f"/proc/{pid}/cmdline")
    return not command_line.exists() or PUBLISHER in command_line.read_bytes()


def mark_orphans_killed(client: MlflowClient) -> list[str]:
    """End as KILLED the runs of this host whose publishing process is gone (kill -9),
    in every experiment: the next publish may well go to another experiment."""
    host = socket.gethostname()
    experiment_ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=PAGE_SIZE, page_token=token)
        experiment_ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            break
    running = []
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids,
            filter_string="attributes.status = 'RUNNING'",
            max_results=PAGE_SIZE,
            page_token=token,
        )
        running += page
        token = page.token
        if not token:
            break
    orphans = [
        run.info.run_id
        for run in running
        if run.data.tags.get(TAG_HOST) == host
        and TAG_PID in run.data.tags
        and not _process_alive(int(run.data.tags[TAG_PID]))
    ]
    for run_id in orphans:
        client.set_terminated(run_id, "KILLED")
        logger.warning("track: marked run %s KILLED: its process died without ending it", run_id)
    return orphans


def end_active_runs(status: str) -> None:
    while mlflow.active_run() is not None:
        mlflow.end_run(status)


def end_publication(status: str, created_runs: list[str], client: MlflowClient) -> None:
    """End an interrupted publication: its open runs, and the runs it had already
    finished (a family's, a replicate's), all with `status`: a publication is
    complete, or none of its runs says FINISHED."""
    end_active_runs(status)
    for run_id in created_runs:
        client.set_terminated(run_id, status)
