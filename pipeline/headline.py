"""What `dvc exp show` lists per experiment (`data/compare/headline.json`, the
verdict's DVC metrics), with the numbers rounded as MLflow's run list shows them."""

from typing import Any

FAMILIES = ("keras", "sklearn")
DIGITS = 4  # significant digits of every number shown to people


def rounded(value: float, digits: int = DIGITS) -> float:
    """`value` to `digits` significant digits: -0.0016, not -0.00160000000000000458."""
    return float(f"{value:.{digits}g}")


def verdict_text(winner: str, significant: bool) -> str:
    """`keras wins`, `sklearn, n.s.` or `tie`, as `pipeline.rank` writes it."""
    if winner == "tie":
        return "tie"
    return f"{winner} wins" if significant else f"{winner}, n.s."


def headline_record(
    verdict: str,
    primary_metric: str,
    test_metrics: dict[str, dict[str, float]],
    p_value: float,
    pruned_epochs: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One short row per experiment in `dvc exp show` and `dvc metrics show`. The
    MLflow run is in `data/track/published.json`: it does not exist before `track`.
    A search trial whose library was pruned adds `<family>_pruned_epoch`."""
    return {
        "verdict": verdict,
        **{
            f"{family}_{primary_metric}": rounded(test_metrics[family][primary_metric])
            for family in FAMILIES
        },
        "p_value": rounded(p_value, 3),
        **{f"{family}_pruned_epoch": epoch for family, epoch in (pruned_epochs or {}).items()},
    }
