"""Measure training throughput, pipeline wall time and peak memory; print a table and
write JSON.

    ./run python -m benchmarks.run                       # everything (about 15 min here)
    ./run python -m benchmarks.run --sections throughput --rows 100000 --batches 32
    ./run python -m benchmarks.run --sections replicates   # K = 5 and 6 next to K = 1
    ./run python -m benchmarks.run --sections loop --output benchmarks/loop.json
                               # repro, one experiment, a queued grid; with and without
                               # the warm worker

Figures and ratios only: nothing here passes or fails. Numbers depend on the machine
and on whatever else runs on it, so compare ratios measured in one run.
"""

import argparse
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from pipeline.config import parse_params
from pipeline.memory import DataShape, estimate_costs
from pipeline.worker import stop
from pipeline.worker_protocol import socket_path
from tests.endtoend import copy_repository, environment, initialize_repository

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results.json"
EPOCH_LINE = re.compile(r"^(keras|sklearn)\s+epoch\s+(\d+)/")
STAGE_LINE = re.compile(r"^Running stage '(\w+)'")
# Runs a stage module by itself and prints, as JSON, its RSS right after its imports
# (the child imports the module, reports VmRSS through a pipe, then runs its `main`), its
# peak RSS, and the largest sum of the PSS of it and of the processes it started
# (scikit-learn's workers), sampled every 50 ms: pages they share count once. Linux
# carries a process's peak RSS over fork and exec, so a stage started straight from this
# benchmark (TensorFlow loaded, 1 GB and more) would report the benchmark's peak;
# started from this small wrapper, it reports its own.
RUN_STAGE = """
import importlib, os, sys
module = importlib.import_module(sys.argv[1])
def kilobytes(path, name):
    return next(int(line.split()[1]) for line in open(path) if line.startswith(name + ":"))
with os.fdopen(int(sys.argv[2]), "w") as report:
    report.write(" ".join(str(kilobytes(f"/proc/self/{file}", name) * 1024) for file, name in (
        ("status", "VmRSS"), ("status", "VmHWM"), ("smaps_rollup", "Anonymous"),
        ("smaps_rollup", "Pss"),
    )))
from pipeline.errors import run_stage
run_stage(module.main)
"""
PEAK_RSS = f"""
import glob, json, os, sys, threading, time
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read_end)
    os.set_inheritable(write_end, True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.executable, [sys.executable, "-c", {RUN_STAGE!r}, sys.argv[1], str(write_end)])
os.close(write_end)
tree_peak, most_workers, done = 0, 0, threading.Event()
python = os.path.realpath(sys.executable)
def descendants(parent):
    found = []
    for path in glob.glob(f"/proc/{{parent}}/task/*/children"):
        try:
            children = [int(child) for child in open(path).read().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found
def sample():
    global tree_peak, most_workers
    while not done.wait(0.05):
        children, workers = descendants(pid), 0
        for child in children:
            # A worker is a Python process that runs the stage's code (joblib's), not
            # git or joblib's resource tracker.
            try:
                command = open(f"/proc/{{child}}/cmdline", "rb").read()
                runs_python = os.path.realpath(f"/proc/{{child}}/exe") == python
            except OSError:
                continue
            workers += runs_python and b"tracker" not in command
        total = 0
        for process in [pid, *children]:
            try:
                total += next(
                    int(line.split()[1]) * 1024
                    for line in open(f"/proc/{{process}}/smaps_rollup")
                    if line.startswith("Pss:")
                )
            except (OSError, StopIteration):
                pass
        tree_peak, most_workers = max(tree_peak, total), max(most_workers, workers)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
_, status, usage = os.wait4(pid, 0)
done.set()
sampler.join()
imports = os.read(read_end, 100).split()
print(json.dumps({{
    "after_imports_rss_bytes": int(imports[0]) if imports else None,
    "after_imports_peak_bytes": int(imports[1]) if imports else None,
    "after_imports_anonymous_bytes": int(imports[2]) if imports else None,
    "after_imports_pss_bytes": int(imports[3]) if imports else None,
    "peak_rss_bytes": usage.ru_maxrss * 1024,
    "tree_peak_pss_bytes": tree_peak,
    "workers": most_workers,
}}))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class Throughput:
    trainer: str
    rows: int
    train_rows: int
    batch_size: int
    epochs: int
    samples_per_second_steady: float  # median epoch after the first
    samples_per_second_with_compile: float  # all epochs, first call included
    final_val_loss: float


class EpochClock(logging.Handler):
    """Timestamps of the trainers' per-epoch progress lines."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if EPOCH_LINE.match(record.getMessage()):
            self.times.append(time.perf_counter())


def measure_trainer(trainer: str, rows: int, batch_size: int, epochs: int, seed: int = 42):
    """Train one model on `rows` generated rows; its throughput and final val_loss."""
    from pipeline.config import load_params
    from pipeline.dataset import generate_dataset
    from pipeline.split import split_dataset

    params = load_params(ROOT / "params.yaml")
    dataset = generate_dataset(params.dataset.model_copy(update={"n_samples": rows}), seed)
    splits = split_dataset(dataset, params.split, seed)
    spec = params.model.model_copy(update={"batch_size": batch_size, "epochs": epochs})
    # Imported before the clock starts: TensorFlow's import is not training time.
    if trainer == "sklearn":
        from pipeline.train_sklearn import train as train_sklearn
    else:
        from pipeline.train_keras import train as train_keras
    clock = EpochClock()
    progress = logging.getLogger("pipeline.history")
    progress.setLevel(logging.INFO)
    progress.propagate = False  # timestamps only; no per-epoch lines in the report
    progress.addHandler(clock)
    started = time.perf_counter()
    try:
        if trainer == "sklearn":
            result = train_sklearn(splits.train, splits.validation, spec, "constant", seed)
        else:
            keras_trainer = trainer.removeprefix("keras ")
            result = train_keras(
                splits.train, splits.validation, spec, "glorot_uniform", seed, keras_trainer
            )
    finally:
        progress.removeHandler(clock)
    train_rows = len(splits.train.labels)
    epoch_seconds = [
        later - earlier for earlier, later in zip(clock.times, clock.times[1:], strict=False)
    ]
    steady = statistics.median(epoch_seconds) if epoch_seconds else clock.times[0] - started
    return Throughput(
        trainer=trainer,
        rows=rows,
        train_rows=train_rows,
        batch_size=batch_size,
        epochs=epochs,
        samples_per_second_steady=train_rows / steady,
        samples_per_second_with_compile=train_rows * epochs / (clock.times[-1] - started),
        final_val_loss=float(result.history["val_loss"].iloc[-1]),
    )


def throughput_section(
    rows_list: list[int], batches: list[int], epochs: int, fit_max_rows: int
) -> list[dict]:
    results = []
    for rows in rows_list:
        for batch_size in batches:
            trainers = ["keras xla", "keras graph", "sklearn"]
            # Keras' model.fit runs about 10k-20k samples/s at batch 32 here: at a
            # million rows one epoch would take a minute, so it is measured below that.
            if rows <= fit_max_rows:
                trainers.append("keras fit")
            for trainer in trainers:
                measured = measure_trainer(trainer, rows, batch_size, epochs)
                print(
                    f"  {trainer:15} rows {rows:>9,} batch {batch_size:>4}: "
                    f"{measured.samples_per_second_steady:>12,.0f} samples/s steady, "
                    f"val_loss {measured.final_val_loss:.4f}",
                    flush=True,
                )
                results.append(asdict(measured))
    return results


def ratios(throughput: list[dict]) -> list[dict]:
    """Keras' XLA loop vs scikit-learn (speed) and vs model.fit (speed, final val_loss)."""
    by_key = {(item["trainer"], item["rows"], item["batch_size"]): item for item in throughput}
    rows = []
    for (trainer, row_count, batch_size), compiled in by_key.items():
        if trainer != "keras xla":
            continue
        sklearn = by_key.get(("sklearn", row_count, batch_size))
        fit = by_key.get(("keras fit", row_count, batch_size))
        rows.append(
            {
                "rows": row_count,
                "batch_size": batch_size,
                "keras_over_sklearn_steady": compiled["samples_per_second_steady"]
                / sklearn["samples_per_second_steady"],
                "keras_over_sklearn_with_compile": compiled["samples_per_second_with_compile"]
                / sklearn["samples_per_second_with_compile"],
                "keras_over_fit_steady": (
                    compiled["samples_per_second_steady"] / fit["samples_per_second_steady"]
                    if fit
                    else None
                ),
                "val_loss_vs_fit": (
                    compiled["final_val_loss"] / fit["final_val_loss"] - 1 if fit else None
                ),
            }
        )
    return rows


def bare_import_seconds(module: str, repeats: int = 3) -> float:
    """Median wall time of `python -c "import <module>"` in a fresh process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            check=True,
            capture_output=True,
            env=environment(),
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def pipeline_section() -> dict:
    """The full default `dvc repro` from scratch, per stage, next to a bare TF import."""
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as work:
        project = Path(work)
        copy_repository(project)
        initialize_repository(project, "benchmark")
        started = time.perf_counter()
        process = subprocess.Popen(
            ["dvc", "repro"],
            cwd=project,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        marks: list[tuple[str, float]] = [("dvc start-up", started)]
        for line in process.stdout:
            match = STAGE_LINE.match(line)
            if match:
                marks.append((match.group(1), time.perf_counter()))
        if process.wait() != 0:
            raise RuntimeError("dvc repro failed in the benchmark copy")
        finished = time.perf_counter()
    ends = [mark for _, mark in marks[1:]] + [finished]
    stages = {name: end - start for (name, start), end in zip(marks, ends, strict=True)}
    total = finished - started
    tensorflow_import = bare_import_seconds("tensorflow")
    # What each stage pays before doing any work: starting Python and importing it.
    import_floor = {
        stage: bare_import_seconds(f"pipeline.{stage}", repeats=2)
        for stage in stages
        if stage != "dvc start-up"
    }
    return {
        "stage_seconds": stages,
        "stage_import_seconds": import_floor,
        "total_seconds": total,
        "total_import_seconds": sum(import_floor.values()),
        "bare_tensorflow_import_seconds": tensorflow_import,
        "total_over_tensorflow_import": total / tensorflow_import,
    }


def estimated_peaks(params: dict, shape: DataShape) -> dict[str, int]:
    """What `pipeline.memory` estimates for each stage of this run, to set beside the
    measured peaks."""
    return {cost.stage: cost.bytes for cost in estimate_costs(parse_params(params), shape)}


# Every stage, in the order `dvc repro` runs them.
MEMORY_STAGES = ("dataset", "split", "train_keras", "train_sklearn", "compare", "track")


def memory_section(rows: int, batch_size: int | None = None) -> dict:
    """Each stage, run as its own process on `rows` x 8 features with the default
    params otherwise (one epoch; `batch_size` if given): its RSS right after its
    imports, its peak RSS, and what the data cost between the two."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        project = Path(work)
        copy_repository(project)
        params_path = project / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["dataset"]["n_samples"] = rows
        params["model"]["epochs"] = 1
        if batch_size is not None:
            params["model"]["batch_size"] = batch_size
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        # track names the git commit of each run; its store is the copy's own mlflow.db.
        initialize_repository(project, "benchmark")
        n_features = params["dataset"]["n_features"]
        data_bytes = rows * n_features * 4
        estimates = estimated_peaks(params, DataShape(rows, n_features, 0, n_features, 2))
        stages = {}
        for stage in MEMORY_STAGES:
            stages[stage], _ = measure_stage(
                project, stage, estimates.get(stage), data_bytes, f"{rows} rows"
            )
            measured = stages[stage]
            estimate = measured["estimate_bytes"]
            print(
                f"  {stage:14} after imports {measured['after_imports_rss_bytes'] / 2**20:6,.0f}"
                f" MiB, peak {measured['peak_rss_bytes'] / 2**20:6,.0f} MiB: "
                f"{measured['peak_over_imports_over_data']:4.2f} x the float32 data; "
                f"with {measured['workers']} workers {measured['tree_peak_pss_bytes'] / 2**20:,.0f}"
                " MiB; "
                + (f"estimated {estimate / 2**20:,.0f} MiB" if estimate else "no estimate"),
                flush=True,
            )
    return {
        "rows": rows,
        "batch_size": params["model"]["batch_size"],
        "replicates": params["replicates"]["count"],
        "float32_data_bytes": data_bytes,
        "stages": stages,
    }


def measure_stage(
    project: Path, stage: str, estimate: int | None, data_bytes: int, what: str
) -> tuple[dict, str]:
    """Run `stage` in `project` by itself (no worker) under PEAK_RSS: its RSS after its
    imports, its peak RSS, next to the data's size and the memory estimate, and its
    standard error."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, f"pipeline.{stage}"],
        cwd=project,
        env=environment({"PIPELINE_WORKER": "0"}),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{stage} failed on {what}:\n{completed.stderr[-2000:]}")
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    peak, after_imports = measured["peak_rss_bytes"], measured["after_imports_rss_bytes"]
    if measured["workers"]:
        # The stage and its workers together (PSS, sampled), less the imports of each:
        # a worker imports what the stage imports, and holds of it what the stage
        # holds as anonymous memory (the libraries' files are shared, counted once).
        peak = measured["tree_peak_pss_bytes"]
        after_imports = (
            measured["after_imports_pss_bytes"]
            + measured["workers"] * measured["after_imports_anonymous_bytes"]
        )
    return {
        **measured,
        "peak_over_imports_bytes": peak - after_imports,
        "peak_over_imports_over_data": (peak - after_imports) / data_bytes,
        "peak_rss_over_data": peak / data_bytes,
        "estimate_bytes": estimate,
        "estimate_over_peak": estimate / peak if estimate else None,
        "seconds": time.perf_counter() - started,
    }, completed.stderr


def write_csv_file(path: Path, megabytes: int, seed: int = 0) -> tuple[int, int]:
    """A CSV file of about `megabytes` MB: 8 numeric columns, a text column of 5
    categories and a yes/no target, written in chunks. (rows, float32 bytes of its
    numbers as the pipeline holds them)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(seed)
    chunk, rows = 200_000, 0
    categories = np.array(["north", "south", "east", "west", "centre"], dtype=object)
    with pa_csv.CSVWriter(path, schema=_csv_schema()) as writer:
        while path.stat().st_size < megabytes * 10**6:
            numbers = rng.normal(size=(chunk, 8)).round(6)
            columns = [pa.array(numbers[:, index]) for index in range(8)]
            columns.append(pa.array(categories[rng.integers(0, 5, chunk)]))
            columns.append(pa.array(np.where(numbers[:, 0] > 0, "yes", "no").astype(object)))
            writer.write_table(pa.Table.from_arrays(columns, schema=_csv_schema()))
            rows += chunk
    return rows, rows * 9 * 4


def _csv_schema():
    import pyarrow as pa

    return pa.schema(
        [*(pa.field(f"x{index}", pa.float64()) for index in range(1, 9))]
        + [pa.field("region", pa.string()), pa.field("approved", pa.string())]
    )


def csv_section(megabytes: int) -> dict:
    """Peak RSS of `dataset` and `split` on a CSV file of `megabytes` MB, per GB."""
    with tempfile.TemporaryDirectory(prefix="bench-csv-") as work:
        project = Path(work)
        copy_repository(project)
        path = project / "large.csv"
        rows, data_bytes = write_csv_file(path, megabytes)
        size = path.stat().st_size
        params_path = project / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["dataset"] |= {"source": "file", "path": "large.csv", "target": "approved"}
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        # 8 numbers and a text column of 5 categories: 13 network inputs.
        estimates = estimated_peaks(params, DataShape(rows, 9, 1, 13, 2))
        stages = {}
        for stage in ("dataset", "split"):
            measured, errors = measure_stage(
                project, stage, estimates[stage], data_bytes, str(path)
            )
            peak, estimate = measured["peak_rss_bytes"], estimates[stage]
            stages[stage] = {
                **measured,
                "peak_rss_per_csv_gb": peak / (size / 10**9),
                "progress_lines": sum("dataset: reading" in line for line in errors.splitlines()),
            }
            print(
                f"  {stage:8} peak RSS {peak / 2**20:8,.0f} MiB = "
                f"{peak / (size / 10**9) / 2**30:.2f} "
                f"GiB per GB of CSV, {peak / data_bytes:4.2f} x the float32 data; estimated "
                f"{estimate / 2**20:,.0f} MiB ({estimate / peak:.2f} x)",
                flush=True,
            )
    return {"csv_bytes": size, "rows": rows, "float32_data_bytes": data_bytes, "stages": stages}


def worker_cpu_seconds() -> tuple[int, float] | None:
    """(pid, CPU seconds) of this environment's warm worker, with those of the stage
    children it has reaped; None when none runs. Its pid is in its lock file."""
    path = socket_path()
    if path is None:
        return None
    try:
        pid = int(path.with_suffix(".lock").read_text())
        if b"pipeline.worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    # utime, stime, cutime and cstime: fields 14 to 17 of proc(5)'s stat, 11 to 14 here.
    ticks = sum(int(field) for field in fields[11:15])
    return pid, ticks / os.sysconf("SC_CLK_TCK")


def timed(project: Path, *command: str, variables: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command, everything it waited for, and the warm
    worker's stages, which are the worker's children, not the command's)."""
    worker_before = worker_cpu_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=project, env=variables, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_after = worker_cpu_seconds()
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if worker_after is not None:
        same_worker = worker_before is not None and worker_before[0] == worker_after[0]
        # A worker the command started counts whole, its imports included.
        cpu += worker_after[1] - (worker_before[1] if same_worker else 0.0)
    return wall, cpu


def stop_worker() -> None:
    """Stop this environment's worker and wait for it to exit: the next stage starts cold."""
    running = worker_cpu_seconds()
    stop()
    while running is not None and Path(f"/proc/{running[0]}").exists():
        time.sleep(0.1)


def loop_section() -> dict:
    """The experiment loop, without and with the warm worker, each next to a bare
    `import tensorflow` in the same run: (a) a full default `dvc repro` from scratch
    (with the worker: started by its first stage), (b) one `dvc exp run -S
    model.learning_rate=0.01` after it, (c) a queued grid of 4 run two at a time."""
    with tempfile.TemporaryDirectory(prefix="bench-import-") as work:
        import_wall, import_cpu = [], []
        for _ in range(3):
            wall, cpu = timed(
                Path(work), sys.executable, "-c", "import tensorflow", variables=environment()
            )
            import_wall.append(wall)
            import_cpu.append(cpu)
    results: dict = {
        "bare_tensorflow_import": {
            "wall": statistics.median(import_wall),
            "cpu": statistics.median(import_cpu),
        }
    }
    for name, variables in (
        ("without_worker", environment({"PIPELINE_WORKER": "0"})),
        ("with_worker", environment()),
    ):
        print(f"  {name.replace('_', ' ')}", flush=True)
        stop_worker()
        try:
            results[name] = loop_measurements(variables)
        finally:
            stop_worker()
    return results


def loop_measurements(variables: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as work:
        project = Path(work)
        copy_repository(project)
        initialize_repository(project, "benchmark")
        repro_wall, repro_cpu = timed(project, "dvc", "repro", variables=variables)
        experiment_wall, experiment_cpu = timed(
            project, "dvc", "exp", "run", "-S", "model.learning_rate=0.01", variables=variables
        )
        timed(
            project,
            "dvc",
            "exp",
            "run",
            "--queue",
            "-S",
            "model.learning_rate=0.002,0.005",
            "-S",
            "model.l2=0,0.0001",
            variables=variables,
        )
        started = time.perf_counter()
        timed(project, "dvc", "queue", "start", "-j", "2", variables=variables)
        while True:
            status = subprocess.run(
                ["dvc", "queue", "status"],
                cwd=project,
                env=variables,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            time.sleep(2)
        grid_wall = time.perf_counter() - started
        failed = status.count("Failed")
    return {
        "repro": {"wall": repro_wall, "cpu": repro_cpu},
        "experiment": {"wall": experiment_wall, "cpu": experiment_cpu},
        "grid": {
            "experiments": 4,
            "wall": grid_wall,
            "failed": failed,
            "experiments_per_minute": 4 * 60 / grid_wall,
        },
    }


def stage_seconds(project: Path, stage: str) -> float:
    """Wall time of one stage run as a program, from start to exit."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}"],
        cwd=project,
        env=environment(),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{completed.stderr[-2000:]}")
    return time.perf_counter() - started


def replicates_section(rows_list: list[int], counts: list[int]) -> list[dict]:
    """Each training stage's wall time with K replicates, next to K = 1, on the
    default data and larger sets (default model, 10 epochs)."""
    results = []
    for rows in rows_list:
        with tempfile.TemporaryDirectory(prefix="bench-replicates-") as work:
            project = Path(work)
            copy_repository(project)
            params_path = project / "params.yaml"
            params = yaml.safe_load(params_path.read_text())
            params["dataset"]["n_samples"] = rows
            # alpha 0.1 lets K = 5 through validation: the training is the same.
            params["compare"]["alpha"] = 0.1
            stage_seconds_of = {}
            for count in counts:
                params["replicates"]["count"] = count
                params_path.write_text(yaml.safe_dump(params, sort_keys=False))
                for stage in ("dataset", "split"):
                    stage_seconds(project, stage)
                for stage in ("train_keras", "train_sklearn"):
                    seconds = stage_seconds(project, stage)
                    stage_seconds_of[(stage, count)] = seconds
                    base = stage_seconds_of[(stage, counts[0])]
                    results.append(
                        {
                            "rows": rows,
                            "stage": stage,
                            "replicates": count,
                            "seconds": seconds,
                            "over_one_replicate": seconds / base,
                        }
                    )
                    print(
                        f"  {rows:>9,} rows  {stage:13} K={count:<2} {seconds:6.1f} s "
                        f"= {seconds / base:.2f} x K={counts[0]}",
                        flush=True,
                    )
    return results


def print_tables(results: dict) -> None:
    if "throughput" in results:
        print("\nTraining throughput (samples x epochs per second; steady = after epoch 1)")
        print("| trainer | rows | batch | steady | incl. compile | final val_loss |")
        print("|---|---:|---:|---:|---:|---:|")
        for item in results["throughput"]:
            print(
                f"| {item['trainer']} | {item['rows']:,} | {item['batch_size']} | "
                f"{item['samples_per_second_steady']:,.0f} | "
                f"{item['samples_per_second_with_compile']:,.0f} | "
                f"{item['final_val_loss']:.4f} |"
            )
        header = "| rows | batch | Keras/sklearn steady | incl. compile | Keras/fit |"
        print("\n" + header + " val_loss vs fit |")
        print("|---:|---:|---:|---:|---:|---:|")
        for item in results["ratios"]:
            versus_fit = item["keras_over_fit_steady"]
            loss_gap = item["val_loss_vs_fit"]
            print(
                f"| {item['rows']:,} | {item['batch_size']} | "
                f"{item['keras_over_sklearn_steady']:.1f}x | "
                f"{item['keras_over_sklearn_with_compile']:.1f}x | "
                f"{f'{versus_fit:.0f}x' if versus_fit else '-'} | "
                f"{f'{loss_gap:+.2%}' if loss_gap is not None else '-'} |"
            )
    if "pipeline" in results:
        pipeline = results["pipeline"]
        print("\nFull default `dvc repro` from scratch")
        print("| stage | seconds | of which start-up and imports |")
        print("|---|---:|---:|")
        imports = pipeline["stage_import_seconds"]
        for stage, seconds in pipeline["stage_seconds"].items():
            floor = f"{imports[stage]:.1f}" if stage in imports else "-"
            print(f"| {stage} | {seconds:.1f} | {floor} |")
        print(
            f"| **total** | **{pipeline['total_seconds']:.1f}** | "
            f"**{pipeline['total_import_seconds']:.1f}** |"
        )
        print(
            f"bare `import tensorflow`: {pipeline['bare_tensorflow_import_seconds']:.1f} s; "
            f"total / import = {pipeline['total_over_tensorflow_import']:.1f}"
        )
    if "loop" in results:
        print_loop(results["loop"])
    if "replicates" in results:
        print("\nTraining stages with K replicates (wall time of the whole stage)")
        print("| rows | stage | K | seconds | x K=1 |")
        print("|---:|---|---:|---:|---:|")
        for item in results["replicates"]:
            print(
                f"| {item['rows']:,} | {item['stage']} | {item['replicates']} | "
                f"{item['seconds']:.1f} | {item['over_one_replicate']:.2f} |"
            )
    if "csv" in results:
        large = results["csv"]
        print(
            f"\nPeak RSS on a {large['csv_bytes'] / 10**9:.2f} GB CSV file, {large['rows']:,} rows "
            f"({large['float32_data_bytes'] / 2**20:,.0f} MiB as float32)"
        )
        print("| stage | peak RSS (MiB) | GiB per GB of CSV | x data | seconds | estimate |")
        print("|---|---:|---:|---:|---:|---:|")
        for stage, item in large["stages"].items():
            print(
                f"| {stage} | {item['peak_rss_bytes'] / 2**20:,.0f} | "
                f"{item['peak_rss_per_csv_gb'] / 2**30:.2f} | {item['peak_rss_over_data']:.2f} | "
                f"{item['seconds']:.0f} | {item['estimate_over_peak']:.2f} x |"
            )
    if "memory" in results:
        print_memory(results["memory"])


def print_memory(memory: dict) -> None:
    data = memory["float32_data_bytes"]
    print(
        f"\nMemory per stage, {memory['rows']:,} rows x 8 features "
        f"({data / 2**20:,.0f} MiB as float32), {memory['replicates']} replicates, "
        f"batch {memory['batch_size']}, 1 epoch (MiB)"
    )
    # With workers, "peak - imports" is the sampled peak of the stage and its workers
    # together, less the imports of each.
    print(
        "| stage | after imports | peak RSS | peak - imports | x data | workers: all | estimate |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for stage, item in memory["stages"].items():
        estimate = item["estimate_bytes"]
        workers = item["workers"]
        tree = f"{workers}: {item['tree_peak_pss_bytes'] / 2**20:,.0f}" if workers else "-"
        estimated = (
            f"{estimate / 2**20:,.0f} ({item['estimate_over_peak']:.2f} x)" if estimate else "-"
        )
        print(
            f"| {stage} | {item['after_imports_rss_bytes'] / 2**20:,.0f} | "
            f"{item['peak_rss_bytes'] / 2**20:,.0f} | "
            f"{item['peak_over_imports_bytes'] / 2**20:,.0f} | "
            f"{item['peak_over_imports_over_data']:.2f} | "
            f"{tree} | "
            f"{estimated} |"
        )


def print_loop(loop: dict) -> None:
    bare = loop["bare_tensorflow_import"]
    variants = ("without_worker", "with_worker")
    print("\nThe experiment loop, next to one bare `import tensorflow` (x import)")
    print("| measurement | worker | wall (s) | x import | CPU (s) | x import |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| bare `import tensorflow` | - | {bare['wall']:.1f} | 1.0 | {bare['cpu']:.1f} | 1.0 |")
    for name, key in (
        ("(a) full `dvc repro` from scratch", "repro"),
        ("(b) one `dvc exp run -S model.learning_rate=0.01`", "experiment"),
    ):
        for variant in variants:
            item = loop[variant][key]
            print(
                f"| {name} | {'with' if variant == 'with_worker' else 'without'} | "
                f"{item['wall']:.1f} | {item['wall'] / bare['wall']:.1f} | "
                f"{item['cpu']:.1f} | {item['cpu'] / bare['cpu']:.1f} |"
            )
    for variant in variants:
        grid = loop[variant]["grid"]
        print(
            f"(c) a queued grid of 4 with `-j 2`, {variant.replace('_', ' ')}: "
            f"{grid['wall']:.0f} s, {grid['experiments_per_minute']:.1f} experiments per "
            f"minute ({grid['failed']} failed)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        default="throughput,pipeline,loop,replicates,memory",
        help="comma-separated: throughput, pipeline, loop, replicates, memory, csv",
    )
    parser.add_argument(
        "--csv-mb", type=int, default=100, help="size of the CSV file of the csv section (MB)"
    )
    parser.add_argument("--replicate-rows", default="2000,100000", help="replicates data sizes")
    parser.add_argument("--replicate-counts", default="1,5,6", help="replicates to compare")
    parser.add_argument("--rows", default="10000,100000,1000000", help="throughput data sizes")
    parser.add_argument("--batches", default="32,256", help="throughput batch sizes")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per throughput run")
    parser.add_argument(
        "--fit-max-rows", type=int, default=100_000, help="largest data for model.fit"
    )
    parser.add_argument("--memory-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--memory-batch-size", type=int, help="model.batch_size of the memory section"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()
    sections = {section.strip() for section in arguments.sections.split(",")}
    logging.basicConfig(level=logging.WARNING)
    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "throughput" in sections:
        print("Training throughput", flush=True)
        results["throughput"] = throughput_section(
            [int(rows) for rows in arguments.rows.split(",")],
            [int(batch) for batch in arguments.batches.split(",")],
            arguments.epochs,
            arguments.fit_max_rows,
        )
        results["ratios"] = ratios(results["throughput"])
    if "pipeline" in sections:
        print("Full dvc repro", flush=True)
        results["pipeline"] = pipeline_section()
    if "loop" in sections:
        print("The experiment loop", flush=True)
        results["loop"] = loop_section()
    if "replicates" in sections:
        print("Training stages with K replicates", flush=True)
        results["replicates"] = replicates_section(
            [int(rows) for rows in arguments.replicate_rows.split(",")],
            [int(count) for count in arguments.replicate_counts.split(",")],
        )
    if "memory" in sections:
        print(f"Peak memory on {arguments.memory_rows:,} rows", flush=True)
        results["memory"] = memory_section(arguments.memory_rows, arguments.memory_batch_size)
    if "csv" in sections:
        print(f"Peak memory on a CSV file of {arguments.csv_mb} MB", flush=True)
        results["csv"] = csv_section(arguments.csv_mb)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(f"\nwritten: {arguments.output}")


if __name__ == "__main__":
    main()
