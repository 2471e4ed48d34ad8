"""The search's report: budget, space, each library's best params, the fair verdict,
param importances and optimization history (`reports/search/<study>/report/`)."""

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

from pipeline.figures import COLORS, plt, save_figure
from pipeline.files import atomic_directory
from pipeline.report import visible
from pipeline.search_space import decoded_params, short
from pipeline.statistics import ReplicateVerdict

if TYPE_CHECKING:
    from pipeline.search import Outcome, Search

logger = logging.getLogger(__name__)

# On the study's MLflow run: what it decided on (see `study_run`).
VERDICT_KEY = "search.verdict_of"


def evaluator() -> optuna.importance.FanovaImportanceEvaluator:
    """fANOVA, seeded: each param's share of the objective's variance, whichever the
    direction (Optuna's default, PED-ANOVA, assumes lower is better)."""
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def importances(study: optuna.Study) -> dict[str, float] | None:
    """Each param's importance for the library's score; None while too few trials have
    finished to tell."""
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator())
    except (ValueError, RuntimeError):
        return None


def history_figure(studies: dict[str, optuna.Study], metric: str, maximize: bool) -> Figure:
    """Both libraries' validation score per finished trial (pruned ones have none), and
    the best so far."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for family, study in studies.items():
        trials = sorted(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
            key=lambda trial: trial.user_attrs["run"],
        )
        numbers = [trial.user_attrs["run"] for trial in trials]
        values = np.array([trial.value for trial in trials])
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        color = COLORS[family]
        axes.scatter(numbers, values, color=color, alpha=0.5, label=f"{family}, trial")
        axes.step(numbers, best, where="post", color=color, label=f"{family}, best so far")
    axes.set_xlabel("trial")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"validation {metric}")
    axes.set_title("Optimization history")
    axes.legend()
    return figure


def draw_figures(
    studies: dict[str, optuna.Study], metric: str, maximize: bool, folder: Path
) -> list[str]:
    """The optimization history and each library's param importances as PNG files;
    their names."""
    from optuna.visualization import matplotlib as plots

    save_figure(history_figure(studies, metric, maximize), folder / "history.png")
    names = ["history.png"]
    with warnings.catch_warnings():
        # Optuna marks its matplotlib plots experimental; their output is what we want.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for family, study in studies.items():
            try:
                axes = plots.plot_param_importances(
                    study,
                    evaluator=evaluator(),
                    target_name=f"validation {metric}, {family}",
                )
            except (ValueError, RuntimeError):
                continue  # importances need a few finished trials
            save_figure(axes.figure, folder / f"importance_{family}.png")
            names.append(f"importance_{family}.png")
    plt.close("all")
    return names


def verdict_sentence(verdict: ReplicateVerdict) -> str:
    means = f"keras {verdict.keras.mean():.4f}, sklearn {verdict.sklearn.mean():.4f}"
    if verdict.winner == "tie":
        outcome = "a tie"
    else:
        strength = "significant" if verdict.significant else "not significant"
        outcome = f"{verdict.winner} better ({strength} at alpha {verdict.alpha:g})"
    return (
        f"{outcome}: mean test {verdict.metric} {means} over {verdict.count} replicates each, "
        f"paired by seed; difference keras - sklearn {verdict.difference.estimate:+.4f}, "
        f"sign-flip p = {verdict.p_value:.3g}"
    )


def _cell(value: Any) -> str:
    """A table cell that a value from the search file cannot break."""
    return visible(json.dumps(value) if not isinstance(value, str) else value).replace("|", "\\|")


def report_markdown(
    search: "Search", studies: dict[str, optuna.Study], outcome: "Outcome", figures: list[str]
) -> str:
    config, metric = search.config, search.metric
    counts = outcome.counts
    trials = [trial for study in studies.values() for trial in study.get_trials(deepcopy=False)]
    pruned = ", ".join(
        f"{family} {family_counts[TrialState.PRUNED]}" for family, family_counts in counts.items()
    )
    finished_runs = counts["keras"][TrialState.COMPLETE] + counts["keras"][TrialState.PRUNED]
    started = [trial.datetime_start for trial in trials if trial.datetime_start]
    ended = [trial.datetime_complete for trial in trials if trial.datetime_complete]
    minutes = (max(ended) - min(started)).total_seconds() / 60 if started and ended else 0.0
    lines = [
        f"# Search `{config.study}`: Keras vs scikit-learn, each at its best",
        "",
        f"**Verdict on the test rows:** {verdict_sentence(outcome.verdict)}.",
        "",
        "## Budget",
        "",
        f"The same for both libraries: every trial trained both on the same params, "
        f"proposed in turn by each library's sampler, and each library's best trial is "
        f"chosen by its own validation {metric} ({search.direction}). Budget: "
        f"{config.budget.trials or 'no limit on'} trials, "
        f"{config.budget.minutes or 'no limit on'} minutes; sampler `{config.sampler}`; "
        f"pruner `{config.pruner.type}`.",
        f"Finished trials: {finished_runs}, of which pruned: {pruned}; failed "
        f"{counts['keras'][TrialState.FAIL]} (a killed worker's trial fails and is retried); "
        f"{minutes:.1f} minutes from the first trial's start to the last one's end.",
        f"Every trial also set: {_cell(config.trial_params)}.",
        "",
        "## Search space",
        "",
        "| param | type | range or choices | scale | only when |",
        "|---|---|---|---|---|",
    ]
    for key, dimension in config.space.items():
        span = (
            _cell(dimension.choices)
            if dimension.type == "categorical"
            else f"{dimension.low:g} to {dimension.high:g}"
        )
        scale = "log" if getattr(dimension, "log", False) else "-"
        when = _cell(dimension.when) if dimension.when else "-"
        lines.append(f"| `{key}` | {dimension.type} | {span} | {scale} | {when} |")
    lines += ["", "## Each library's best params", ""]
    lines += ["| | " + " | ".join(outcome.best) + " |", "|---|" + "---|" * len(outcome.best)]
    best_params = {
        family: decoded_params(config, trial.params) for family, trial in outcome.best.items()
    }
    lines.append(
        "| trial | "
        + " | ".join(str(trial.user_attrs["run"]) for trial in outcome.best.values())
        + " |"
    )
    lines.append(
        f"| validation {metric} | "
        + " | ".join(f"{trial.value:.4f}" for trial in outcome.best.values())
        + " |"
    )
    for key in config.space:
        cells = [_cell(short(best_params[family].get(key, "-"))) for family in outcome.best]
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines.append(
        "| re-trained as | "
        + " | ".join(f"`{experiment.name}`" for experiment in outcome.experiments.values())
        + " |"
    )
    lines += ["", "## What mattered", ""]
    for family in outcome.best:
        shares = importances(studies[family])
        if shares is None:
            lines.append(f"- {family}: too few finished trials to estimate param importances.")
        else:
            listed = ", ".join(f"`{key}` {share:.2f}" for key, share in shares.items())
            lines.append(f"- {family} (fANOVA importance of each param): {listed}")
    lines += [""] + [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def best_lines(outcome: "Outcome", config: Any) -> list[str]:
    """One line per library: its best trial and params."""
    return [
        f"search: best {family}: trial {trial.user_attrs['run']}: "
        + ", ".join(
            f"{key}={short(value)}" for key, value in decoded_params(config, trial.params).items()
        )
        for family, trial in outcome.best.items()
    ]


def write_report(
    search: "Search", studies: dict[str, optuna.Study], outcome: "Outcome", folder: Path
) -> None:
    """The report folder, replaced as a whole once it is complete."""
    with atomic_directory(folder) as temporary:
        figures = draw_figures(studies, search.metric, search.direction == "maximize", temporary)
        (temporary / "search.md").write_text(
            report_markdown(search, studies, outcome, figures), encoding="utf-8"
        )


def study_run(search: "Search", outcome: "Outcome", folder: Path) -> dict[str, Any]:
    """What the study's MLflow run records."""
    config, verdict = search.config, outcome.verdict
    metrics = {
        f"best_validation_{search.metric}_{family}": trial.value
        for family, trial in outcome.best.items()
    }
    metrics |= {
        f"test_{search.metric}_{family}": float(values.mean())
        for family, values in (("keras", verdict.keras), ("sklearn", verdict.sklearn))
    }
    metrics["p_value"] = verdict.p_value
    metrics |= {
        f"trials_{state.name.lower()}_{family}": count
        for family, counts in outcome.counts.items()
        for state, count in counts.items()
    }
    # The same verdict asked again (the same re-trained experiments, the same trial
    # counts) finds its run instead of logging a second one.
    verdict_key = ", ".join(
        [experiment.name for experiment in outcome.experiments.values()]
        + [f"{name} {int(value)}" for name, value in metrics.items() if name.startswith("trials_")]
    )
    return {
        "name": f"search {config.study}",
        "tags": {
            "search.study": config.study,
            VERDICT_KEY: verdict_key,
            "verdict": verdict.winner + ("" if verdict.significant else ", n.s."),
            **{
                f"dvc.experiment.{family}": experiment.name
                for family, experiment in outcome.experiments.items()
            },
        },
        "params": {
            "study": config.study,
            "sampler": config.sampler,
            "budget.trials": config.budget.trials,
            "budget.minutes": config.budget.minutes,
            "pruner": config.pruner.model_dump_json(),
            "objective": f"validation {search.metric}",
            **{
                f"space.{key}": dimension.model_dump_json()
                for key, dimension in config.space.items()
            },
        },
        "metrics": metrics,
        "artifacts": folder,
        # The tags that say a run recorded this very verdict.
        "identity": ("search.study", VERDICT_KEY),
    }
