"""Promotion-gate helpers: the decision publish carries, and the lift over the lexical baseline.

The judgement itself (challenger and production as they serve, on the gate split) is `qdup.registry.judge`. The
metrics dict here is an evaluation's metrics.json; its lexical baseline block (from
`qdup.evaluation.baseline.baseline_metrics`) sits under "baseline" with the same "calibration" and "test" shapes as the
model's, so `gate_value` reads a metric from either side the same way. The lift check reads the calibration split
(`GATE_SPLIT`): test is reported only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qdup.config import SELECTION_SPLIT

CONFIG_KEY = "publish.min_lift_over_baseline"
RETRIEVAL_PREFIX = "retrieval_"
# Where the baseline-lift check compares the model with the lexical baseline; `test` is reported only.
GATE_SPLIT = SELECTION_SPLIT


def gate_value(metrics: dict[str, Any], metric: str, split: str = GATE_SPLIT) -> float:
    """A pair metric from an evaluation's metrics on `split` (default the calibration split, each scorer at its
    calibration-chosen threshold). Retrieval metrics are measured on the served search by `qdup.registry.judge`."""
    if metric.startswith(RETRIEVAL_PREFIX):
        raise ValueError(f"{metric!r} is measured on the served search by the gate stage, not read from an evaluation")
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
    """What publishing carries of the gate stage's record (`qdup.registry.publish.gate_decision`)."""

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


def with_baseline(record: dict[str, Any], check: BaselineCheck) -> dict[str, Any]:
    """A gate record with the baseline requirement: both must pass to promote; a refused check turns the record into a
    refusal whose reason names the baseline first."""
    out = {**record, "baseline": check.as_dict()}
    if not check.ok and record["promote"]:
        out |= {"promote": False, "reason": f"refused: {check.reason}; {record['reason']}"}
    return out
