"""Whether the winner may become the `champion` in the MLflow Model Registry: the
quality gates of `compare.promote`, decided from the verdict alone. `compare`
decides; `track` registers an approved winner once its model is logged."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.config import PromoteConfig

if TYPE_CHECKING:
    # Only for types: `track` imports this module and needs no SciPy.
    from pipeline.paired_tests import Verdict

CHAMPION = "champion"


@dataclass(frozen=True)
class Gate:
    name: str  # the compare.promote key, or "winner"
    passed: bool
    detail: str


def check_gates(
    verdict: "Verdict", estimates: dict[str, dict[str, float]], promote: PromoteConfig
) -> list[Gate]:
    """Each quality gate the winner must pass before it may become the champion."""
    if verdict.winner == "tie":
        return [Gate("winner", False, f"the models tie on test {verdict.metric}: no winner")]
    winner = estimates[verdict.winner]
    gates = [Gate("winner", True, f"{verdict.winner} is better on test {verdict.metric}")]
    for key, metric in (("min_test_roc_auc", "roc_auc"), ("min_test_accuracy", "accuracy")):
        minimum = getattr(promote, key)
        passed = winner[metric] >= minimum
        relation = ">=" if passed else "<"
        gates.append(
            Gate(key, passed, f"test {metric} {winner[metric]:.4f} {relation} {minimum:g}")
        )
    if promote.require_significant:
        gates.append(
            Gate(
                "require_significant",
                verdict.significant,
                f"{verdict.test} p = {verdict.p_value:.4g} "
                + (f"< {verdict.alpha:g}" if verdict.significant else f">= {verdict.alpha:g}"),
            )
        )
    return gates


@dataclass(frozen=True)
class Promotion:
    """`compare`'s decision (disabled, refused, approved); `track` turns an approved
    one into promoted, with the registered version."""

    status: Literal["disabled", "refused", "approved", "promoted"]
    gates: tuple[Gate, ...]
    model_name: str
    family: str | None = None
    version: str | None = None

    def describe(self) -> str:
        if self.status == "disabled":
            return "Promotion is off (`compare.promote.enabled: false`)."
        if self.status == "refused":
            failed = "; ".join(
                f"`{gate.name}` ({gate.detail})" for gate in self.gates if not gate.passed
            )
            plural = "s" if sum(not gate.passed for gate in self.gates) > 1 else ""
            return f"Not promoted to `{self.model_name}`: failed gate{plural} {failed}."
        gates = "; ".join(gate.detail for gate in self.gates)
        if self.status == "approved":
            return (
                f"**{self.family}** passes every gate ({gates}): publishing (the track "
                f"stage) registers it in the Model Registry as `{self.model_name}`, "
                f"alias `{CHAMPION}`."
            )
        return (
            f"Promoted **{self.family}** to the Model Registry as `{self.model_name}` "
            f"version {self.version}, alias `{CHAMPION}`"
            + (f" (gates: {gates})." if gates else ".")
        )


def decide_promotion(
    config: PromoteConfig, verdict: "Verdict", estimates: dict[str, dict[str, float]]
) -> Promotion:
    """Disabled, refused by a gate, or approved for registration."""
    if not config.enabled:
        return Promotion("disabled", (), config.registered_model_name)
    gates = tuple(check_gates(verdict, estimates, config))
    status = "approved" if all(gate.passed for gate in gates) else "refused"
    return Promotion(status, gates, config.registered_model_name, verdict.winner)
