"""How a stage ends: one error line and exit code 2, or success without teardown."""

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError, run_stage
from tests.endtoend import process_running

ROOT = Path(__file__).resolve().parents[1]

# A program that runs a stage through `run_stage`, as `python -m pipeline.<stage>` does.
# The object at module level is freed, and says so, only by the interpreter's teardown.
STAGE_PROGRAM = """
import atexit
import logging
import sys

from pipeline.errors import run_stage


class Teardown:
    def __del__(self):
        sys.stderr.write("teardown\\n")


kept = Teardown()
atexit.register(lambda: sys.stderr.write("exit handler\\n"))


def main():
    print("printed")
    logging.getLogger("stage").info("logged")


run_stage(main)
"""


def run_python(
    arguments: list[str], cwd: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    variables = {**os.environ, "PYTHONPATH": str(ROOT)}
    variables.pop("PIPELINE_DEBUG", None)
    variables.update(extra or {})
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=cwd,
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pipeline_error_is_one_line_and_exit_code_2(capsys):
    def main() -> None:
        raise PipelineError("params.yaml: model.epochs = 0: must be greater than 0")

    with pytest.raises(SystemExit) as raised:
        run_stage(main)

    assert raised.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: params.yaml: model.epochs = 0: must be greater than 0\n"
    assert captured.out == ""


def test_stage_with_bad_params_exits_2_with_one_line(tmp_path: Path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["dataset"]["n_samples"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")

    completed = run_python(["-m", "pipeline.dataset"], tmp_path)

    assert completed.returncode == 2
    assert completed.stderr == (
        "error: params.yaml: dataset.n_samples = -5: must be greater than 0\n"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_pipeline_debug_shows_the_traceback(tmp_path: Path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["dataset"]["n_samples"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")

    completed = run_python(["-m", "pipeline.dataset"], tmp_path, {"PIPELINE_DEBUG": "1"})

    assert completed.returncode != 0
    assert completed.stderr.startswith("Traceback (most recent call last):\n")
    # The frames lead to where the params were checked, then the same message.
    assert 'pipeline/config.py", line' in completed.stderr
    assert completed.stderr.endswith(
        "pipeline.errors.PipelineError: params.yaml: dataset.n_samples = -5: "
        "must be greater than 0\n"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_stage_run_as_a_program_exits_0_without_teardown(tmp_path: Path):
    completed = run_python(["-c", STAGE_PROGRAM], tmp_path)

    assert completed.returncode == 0
    assert completed.stdout == "printed\n"
    # Logging and the exit handlers ran; the teardown did not.
    assert completed.stderr == "logged\nexit handler\n"


def test_stage_called_in_process_returns(monkeypatch):
    def end_process(*arguments: object) -> None:
        raise AssertionError("run_stage would have ended the test process")

    # Were the guard lost, the test process would otherwise end here with code 0.
    monkeypatch.setattr(threading, "_shutdown", end_process)
    monkeypatch.setattr(atexit, "_run_exitfuncs", end_process)
    monkeypatch.setattr(os, "_exit", end_process)
    calls = []

    run_stage(lambda: calls.append("main"))

    assert calls == ["main"]


STOPPED = (
    "every output is the previous one or a complete new one, and `dvc repro` finishes the rest"
)
# A stage that announces itself, then waits to be stopped.
WAITING_STAGE = """
import os
import signal
import time

from pipeline.errors import run_stage


def main():
    print("started", flush=True)
    {action}
    time.sleep(60)


run_stage(main)
"""


@pytest.mark.parametrize(
    ("action", "code", "name"),
    [
        ("raise KeyboardInterrupt", 130, "Ctrl-C (SIGINT)"),
        ("os.kill(os.getpid(), signal.SIGINT)", 130, "Ctrl-C (SIGINT)"),
        ("os.kill(os.getpid(), signal.SIGTERM)", 143, "SIGTERM"),
    ],
)
def test_interrupt_is_one_line_and_128_plus_the_signal(
    tmp_path: Path, action: str, code: int, name: str
):
    completed = run_python(["-c", WAITING_STAGE.format(action=action)], tmp_path)

    assert completed.returncode == code
    assert completed.stdout == "started\n"
    assert completed.stderr == f"error: stopped by {name}; {STOPPED}\n"


def test_a_command_that_is_no_stage_says_what_to_run_after_a_stop(tmp_path: Path):
    """`dvc repro` would not go on with the search or rank: they say their own next step."""
    script = WAITING_STAGE.format(action="raise KeyboardInterrupt").replace(
        "run_stage(main)", 'run_stage(main, "run the same command again")'
    )
    completed = run_python(["-c", script], tmp_path)

    assert completed.returncode == 130
    assert completed.stderr == "error: stopped by Ctrl-C (SIGINT); run the same command again\n"


# Starts the stage above, as `dvc repro` does, and waits to be killed. With "dvc", the
# stage is its child; with "dvc through sh", a child of `/bin/sh -c`, as under DVC when
# SHELL is unset (dash forks the command and waits for it). Prints the child's pid.
PARENT = """
import os
import subprocess
import sys
import time

started_by, script = sys.argv[1], sys.argv[2]
variables = dict(os.environ)
if started_by.startswith("dvc"):
    variables["DVC_STAGE"] = "train"
command = [sys.executable, script]
if started_by == "dvc through sh":
    command = ["/bin/sh", "-c", f"{sys.executable} {script}"]
stage = subprocess.Popen(command, env=variables)
print(stage.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.parametrize("started_by", ["dvc", "dvc through sh", "hand"])
def test_stage_started_by_dvc_stops_when_dvc_dies(tmp_path: Path, started_by: str):
    """Under DVC, the death of `dvc` stops the stage, with or without a shell between
    them; started by hand (`nohup`), it runs on."""
    script = tmp_path / "stage.py"
    script.write_text(WAITING_STAGE.format(action=""))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, started_by, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stage = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline() == "started\n"
        parent.kill()
        parent.wait()
        if started_by != "hand":
            # The pipes close when the stage, which shares them, has ended too.
            output, errors = parent.communicate(timeout=30)
            assert errors == f"error: stopped by SIGTERM; {STOPPED}\n"
            deadline = time.monotonic() + 10
            while process_running(stage) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not process_running(stage)
        else:
            time.sleep(2)
            assert process_running(stage)
    finally:
        if process_running(stage):
            os.kill(stage, signal.SIGKILL)
