"""The promotion gate: the metric it reads, the decision against production, the lift over the lexical baseline, paired differences.

The metrics dict is an evaluation's metrics.json; its lexical baseline block (from
`qdup.evaluation.baseline.baseline_metrics`) sits under "baseline" with the same "calibration" and
"test" shapes as the model's, so `gate_value` reads a metric from either side the same way.
Like the promotion decision, the lift check reads the calibration split (`GATE_SPLIT`): test
is reported only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qdup.config import SELECTION_SPLIT
from qdup.evaluation.bootstrap import format_paired_difference

CONFIG_KEY = "publish.min_lift_over_baseline"
RETRIEVAL_PREFIX = "retrieval_"
# The selection split: the promotion gate and the baseline-lift check compare models here; `test` is
# reported only, so that choosing between models never makes its figures optimistic.
GATE_SPLIT = SELECTION_SPLIT
# For retrieval_* gate metrics: the retrieval stage's validation part (its test part is reported only).
RETRIEVAL_GATE_PART = "val"


def gate_split(metric: str) -> str:
    """Where the gate measures `metric`, in words (for reasons, manifests and cards)."""
    return "the retrieval validation part" if metric.startswith(RETRIEVAL_PREFIX) else f"the {GATE_SPLIT} split"


def gate_value(metrics: dict[str, Any], metric: str, retrieval: dict[str, Any] | None = None, split: str = GATE_SPLIT) -> float:
    """The gate metric from an evaluation's metrics on `split` (default the calibration split, each model at
    its calibration-chosen threshold), or for a `retrieval_*` metric the model's dense figure on the retrieval
    validation part (`retrieval`: that stage's manifest)."""
    if metric.startswith(RETRIEVAL_PREFIX):
        if retrieval is None:
            raise ValueError(f"gate metric {metric!r} needs the retrieval stage's metrics")
        part = RETRIEVAL_GATE_PART if split == GATE_SPLIT else split
        if part not in retrieval:
            raise ValueError(f"gate metric {metric!r}: the retrieval metrics have no {part!r} part")
        return float(retrieval[part]["dense"][metric.removeprefix(RETRIEVAL_PREFIX)])
    if split not in metrics:
        raise ValueError(f"gate metric {metric!r}: the metrics have no {split!r} split")
    block = metrics[split]
    if metric in ("roc_auc", "pr_auc"):
        return float(block["ranking"][metric])
    value = (block.get("at_threshold") or {}).get(metric)
    if value is None:
        raise ValueError(f"metric {metric!r} is undefined for this model on {split}")
    return float(value)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    compared_against: str | None
    challenger: float
    production: float | None
    production_measured_on: str | None
    split: str = f"the {GATE_SPLIT} split"

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "version": self.compared_against,
            "challenger": self.challenger,
            "production": self.production,
            "production_measured_on": self.production_measured_on,
            "split": self.split,
        }


def decide(
    metric: str,
    tolerance: float,
    challenger: float,
    production_version: str | None,
    production: float | None,
    measured_on: str | None,
) -> GateDecision:
    """Promote when there is no production yet, or challenger >= production - tolerance (both on the gate's split)."""
    where = gate_split(metric)
    if production_version is None:
        return GateDecision(True, "first version: becomes production", None, challenger, None, None, where)
    assert production is not None
    ok = challenger >= production - tolerance
    verdict = "at least as good as" if ok else "worse than"
    reason = (
        f"challenger {metric}={challenger:.4f} is {verdict} production {production_version} "
        f"{metric}={production:.4f} (tolerance {tolerance}) on {where} (test is reported only)"
    )
    return GateDecision(ok, reason, production_version, challenger, production, measured_on, where)


@dataclass(frozen=True)
class BaselineCheck:
    """The model against the lexical baseline on the gate metric; `ok` False refuses promotion."""

    ok: bool
    reason: str
    metric: str
    model: float | None
    baseline: float | None
    lift: float | None
    min_lift: float | None
    split: str = GATE_SPLIT

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lift_over_baseline(metrics: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """{metric, model, baseline, baseline_name, lift = model - baseline, split} on the gate's split (calibration), each
    side at its own calibration-chosen threshold; None without a baseline block."""
    block = metrics.get("baseline")
    if not block:
        return None
    model = gate_value(metrics, metric, split=GATE_SPLIT)
    baseline = gate_value(block, metric, split=GATE_SPLIT)
    return {"metric": metric, "model": model, "baseline": baseline, "baseline_name": block.get("name", "baseline"),
            "lift": model - baseline, "split": GATE_SPLIT}


def check_baseline(metrics: dict[str, Any], metric: str, min_lift: float | None) -> BaselineCheck:
    """Whether the challenger beats the lexical baseline by at least `min_lift` on `metric` (calibration split).

    `min_lift` None: the requirement is off (always ok; the lift is still reported when measured).
    With a requirement but no baseline block in the metrics, promotion is refused: a check that
    was asked for and could not be made must not pass silently.
    """
    lift = lift_over_baseline(metrics, metric)
    if lift is None:
        if min_lift is None:
            return BaselineCheck(True, "no lexical baseline measured; no lift required", metric, None, None, None, None)
        return BaselineCheck(
            False,
            f"{CONFIG_KEY}={min_lift} requires a lexical baseline, but this evaluation has none",
            metric, None, None, None, min_lift,
        )
    name, model, base, diff = lift["baseline_name"], lift["model"], lift["baseline"], lift["lift"]
    measured = (
        f"challenger {metric}={model:.4f} vs lexical baseline ({name}) {metric}={base:.4f} on the {GATE_SPLIT} split: "
        f"lift {diff:+.4f}"
    )
    if min_lift is None:
        return BaselineCheck(True, f"{measured} (no minimum lift required)", metric, model, base, diff, None)
    if diff >= min_lift:
        return BaselineCheck(True, f"{measured} >= {CONFIG_KEY}={min_lift}", metric, model, base, diff, min_lift)
    return BaselineCheck(
        False,
        f"{measured} is less than {CONFIG_KEY}={min_lift}: the model does not beat the lexical baseline by enough",
        metric, model, base, diff, min_lift,
    )


def apply_baseline_check(decision: GateDecision, check: BaselineCheck) -> GateDecision:
    """The production comparison and the baseline requirement together: both must pass to promote.

    A refused check turns the decision into a refusal whose reason names the baseline first.
    """
    if check.ok:
        return decision
    return dataclasses.replace(decision, promote=False, reason=f"refused: {check.reason}; {decision.reason}")


def gate_record(
    decision: GateDecision, baseline: BaselineCheck | None = None, paired: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest's `compared_against` entry: `decision.as_dict()` plus the baseline check and the paired difference."""
    out = decision.as_dict()
    if baseline is not None:
        out["baseline"] = baseline.as_dict()
    if paired is not None:
        out["paired_difference"] = {**paired, "text": format_paired_difference(paired)}
    return out
