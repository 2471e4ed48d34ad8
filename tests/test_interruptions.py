"""Tests for `pipeline.interruptions`: the runs of a publisher that died are ended
KILLED by the next one, on this host only. Signals during publishing are tested end
to end in tests/test_trust.py."""

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import interruptions
from pipeline.interruptions import (
    TAG_HOST,
    TAG_PID,
    Terminated,
    _process_alive,
    checkpoint,
    install_signal_handlers,
    mark_orphans_killed,
    signals_deferred,
)
from pipeline.store import ensure_experiment, open_store, resolve_store


def test_runs_of_dead_processes_are_marked_killed(tmp_path: Path, caplog, monkeypatch):
    # One experiment or run per page: every page of a large store is read.
    monkeypatch.setattr(interruptions, "PAGE_SIZE", 1)
    store = resolve_store({}, tmp_path)
    client = open_store(store)
    experiment_id = ensure_experiment(client, "orphans", store)
    other_experiment_id = ensure_experiment(client, "an earlier experiment", store)
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    # A live publisher: its command line names pipeline.track, like the real stage.
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "pipeline.track"]
    )
    # A dead publisher's pid, reused since by a process that is not a publisher.
    reused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        host = socket.gethostname()
        runs = {
            name: client.create_run(
                experiment, tags={TAG_HOST: host, TAG_PID: str(pid)}, run_name=name
            ).info.run_id
            for name, experiment, pid in (
                ("dead", experiment_id, dead_pid.pid),
                ("alive", experiment_id, alive.pid),
                ("dead elsewhere", other_experiment_id, dead_pid.pid),
                ("reused", experiment_id, reused.pid),
            )
        }
        other_host = client.create_run(
            experiment_id, tags={TAG_HOST: "elsewhere", TAG_PID: str(dead_pid.pid)}
        ).info.run_id
        # A run that ended already is left as it is.
        finished = client.create_run(experiment_id, tags={TAG_HOST: host, TAG_PID: "1"})
        client.set_terminated(finished.info.run_id, "FINISHED")
        with caplog.at_level(logging.WARNING, logger="pipeline.interruptions"):
            orphans = mark_orphans_killed(client)
        assert sorted(orphans) == sorted([runs["dead"], runs["dead elsewhere"], runs["reused"]])
        assert sorted(record.getMessage() for record in caplog.records) == sorted(
            f"track: marked run {run_id} KILLED: its process died without ending it"
            for run_id in orphans
        )
        assert client.get_run(runs["reused"]).info.status == "KILLED"
        assert client.get_run(finished.info.run_id).info.status == "FINISHED"
        assert client.get_run(runs["dead"]).info.status == "KILLED"
        assert client.get_run(runs["dead elsewhere"]).info.status == "KILLED"
        assert client.get_run(runs["alive"]).info.status == "RUNNING"
        assert alive.poll() is None and reused.poll() is None  # asked, not signalled
        # Another machine's run: this host cannot know whether it is still going.
        assert client.get_run(other_host).info.status == "RUNNING"
    finally:
        for process in (alive, reused):
            process.kill()
            process.wait()


def test_a_signal_during_a_write_waits_for_the_next_checkpoint():
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    install_signal_handlers()
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)  # delivered, only recorded
            written = True  # the write that was under way completes
            with pytest.raises(Terminated, match="^SIGTERM$"):
                checkpoint()
        assert written
        # Outside a publication a signal stops at once.
        with pytest.raises(Terminated, match="^SIGINT$"):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def test_a_process_of_another_user_counts_as_alive():
    """Signal 0 to another user's process is refused: it exists, and its runs are
    left alone."""
    publisher = subprocess.Popen(
        [sys.executable, "-c", "input()", "pipeline.track"], stdin=subprocess.PIPE
    )
    try:
        assert _process_alive(publisher.pid)
    finally:
        publisher.kill()
        publisher.wait()
    if os.geteuid() != 0:
        assert _process_alive(1)
        return
    # As root every signal is allowed: ask from a child that runs as nobody.
    child = os.fork()
    if child == 0:
        try:
            os.setuid(65534)
            os._exit(0 if _process_alive(1) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
