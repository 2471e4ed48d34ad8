"""Mutation testing as a measurement: how many deliberate bugs do the fast tests
catch in the modules that hold the product's promises? Prints the score per module
and writes JSON.

    ./run python -m benchmarks.mutation                # mutmut run, then the table
    ./run python -m benchmarks.mutation --report-only  # the table of the last run
    ./run mutmut run "pipeline.store*"                 # one module, then --report-only:
                                                       # the other modules keep their rows

mutmut (`[tool.mutmut]` in pyproject.toml says which modules and tests) copies the
project to `mutants/`, changes one operator, constant or call at a time, and runs
the fast tests that reach the changed function. A mutant the tests fail on is
killed; one they pass on survived, and names a bug the tests would let through.
Not part of the default test run; docs/development.md holds the latest table.
"""

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "mutation.json"
# `mutmut results --all true` prints one line per mutant:
#   pipeline.statistics.x_sign_flip_p_value__mutmut_3: killed
RESULT_LINE = re.compile(r"^\s*(?P<name>[\w.ǁ]+)__mutmut_\d+: (?P<status>[\w ]+?)\s*$")
TARGET = 0.85


@dataclass(frozen=True)
class ModuleScore:
    module: str
    mutants: int
    killed: int
    survived: int
    no_tests: int
    timeout: int
    other: int

    @property
    def score(self) -> float:
        """Killed over all mutants: a mutant no test reaches counts as surviving."""
        return self.killed / self.mutants if self.mutants else 1.0


def module_of(name: str) -> str:
    """`pipeline.config.xǁParamsǁ_check_rows` -> `pipeline/config.py`."""
    parts = name.split(".")
    function_index = next(
        index for index, part in enumerate(parts) if part.startswith(("x_", "xǁ"))
    )
    return "/".join(parts[:function_index]) + ".py"


def parse_results(text: str) -> dict[str, Counter]:
    """Mutant statuses counted per module."""
    counts: dict[str, Counter] = {}
    for line in text.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            module = module_of(match.group("name"))
            counts.setdefault(module, Counter())[match.group("status")] += 1
    return counts


def module_scores(counts: dict[str, Counter]) -> list[ModuleScore]:
    scores = []
    for module, statuses in sorted(counts.items()):
        known = statuses["killed"] + statuses["survived"] + statuses["no tests"]
        known += statuses["timeout"]
        scores.append(
            ModuleScore(
                module=module,
                mutants=sum(statuses.values()),
                killed=statuses["killed"],
                survived=statuses["survived"],
                no_tests=statuses["no tests"],
                timeout=statuses["timeout"],
                other=sum(statuses.values()) - known,
            )
        )
    return scores


def measured(item: ModuleScore) -> bool:
    """Whether any mutant of the module ran: mutmut lists those of modules left out of
    a run (`mutmut run "pipeline.store*"`) as not checked."""
    return item.other < item.mutants


def merge_scores(previous: list[ModuleScore], scores: list[ModuleScore]) -> list[ModuleScore]:
    """This run's scores of the modules it measured, the previous ones of the others: a
    run of one module keeps the table's other rows."""
    by_module = {item.module: item for item in previous}
    by_module |= {item.module: item for item in scores if measured(item)}
    return [by_module[module] for module in sorted(by_module)]


def read_scores(path: Path) -> list[ModuleScore]:
    """The scores a previous run wrote, none if there is no such file."""
    if not path.exists():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [ModuleScore(**{key: row[key] for key in row if key != "score"}) for row in rows]


def table(scores: list[ModuleScore]) -> str:
    lines = [
        "| module | mutants | killed | survived | no test reaches it | timeout | not run | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in scores:
        mark = "" if item.score >= TARGET else " (below 85%)"
        lines.append(
            f"| `{item.module}` | {item.mutants} | {item.killed} | {item.survived} | "
            f"{item.no_tests} | {item.timeout} | {item.other} | {item.score:.0%}{mark} |"
        )
    return "\n".join(lines)


def mutmut(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="only the last run's table")
    parser.add_argument("--max-children", type=int, default=2, help="mutants run at once")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()
    if not arguments.report_only:
        print("mutmut run (the fast tests, once per mutant) ...", file=sys.stderr, flush=True)
        completed = mutmut("run", "--max-children", str(arguments.max_children))
        if completed.returncode != 0:
            sys.exit(f"mutmut run failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    results = mutmut("results", "--all", "true")
    scores = module_scores(parse_results(results.stdout))
    if not any(measured(item) for item in scores):
        sys.exit("no mutmut results: run without --report-only first")
    scores = merge_scores(read_scores(arguments.output), scores)
    arguments.output.write_text(
        json.dumps([asdict(item) | {"score": item.score} for item in scores], indent=2) + "\n"
    )
    print(table(scores))
    print(f"\nwritten: {arguments.output}; survivors: `./run mutmut results`")


if __name__ == "__main__":
    main()
