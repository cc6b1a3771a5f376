"""Judging a version as it is served: its pair decisions and its default search, beside production's, on the gate split.

Both sides are measured on the same rows with what each serves: the pair score that makes the duplicate decision
(`Predictor.decided_by`: the reranker's score where it decides, else the encoder cosine) at the threshold it is
compared with, and the search method the version's index uses by default (dense, lexical, the hybrid with its chosen
form and weight, or reranked). The rows are the challenger's `gate` split (no question of the splits its encoder,
thresholds, reranker or choices were fitted on) minus any pair with a question production's fitted parts saw, so that
neither side is measured on what it was fitted on. Each gate metric has its own tolerance; the challenger is refused
when it is worse than production by more than the tolerance on any one, and the refusal names the metric, the rows,
both figures and the paired cluster-bootstrap interval of the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qdup.config import JUDGE_SPLIT, SearchConfig
from qdup.errors import QdupError
from qdup.evaluation.bootstrap import (
    METRICS,
    format_paired_difference,
    paired_difference,
    paired_mean_difference,
    point_metrics,
)
from qdup.evaluation.trust import pair_groups
from qdup.registry.card import search_name
from qdup.registry.gate import RETRIEVAL_PREFIX
from qdup.search.lexical import served_rankings
from qdup.search.retrieval import RetrievalSplit, per_query_metrics, query_part
from qdup.serving.predictor import Predictor


@dataclass(frozen=True)
class ServedVersion:
    """A version as it serves: `label` names it (a version id, or "challenger"), `search` its default search
    ({"method": dense|lexical|hybrid|reranked, "hybrid": {"method": rrf|weighted, "weight": float|None}})."""

    label: str
    predictor: Predictor
    search: dict[str, Any]

    def scorer(self) -> str:
        """The decision in words: 'reranker score >= 0.4400'."""
        name = "reranker score" if self.predictor.decided_by == "reranker" else "encoder cosine"
        return f"{name} >= {self.predictor.decision_threshold:.4f}"

    def search_name(self) -> str:
        return search_name(self.search) or "none"


def default_search(defaults: dict[str, Any] | None) -> dict[str, Any]:
    """A version's default search from its index's search defaults or retrieval summary ({"method", "hybrid"})."""
    if not defaults:
        raise QdupError("the version records no default search method (no index search defaults, no retrieval summary)")
    method = defaults.get("method", defaults.get("best"))
    if method is None:
        raise QdupError(f"the version's search defaults name no method: {sorted(defaults)}")
    return {"method": method, "hybrid": dict(defaults.get("hybrid") or {})}


def gate_metrics(tolerances: dict[str, float], gate_metric: str, default_tolerance: float) -> dict[str, float]:
    """Every metric the gate judges and its tolerance: the configured ones, and the headline `gate_metric`."""
    out = dict(tolerances)
    out.setdefault(gate_metric, default_tolerance)
    return out


def _pair_figures(version: ServedVersion, rows: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, float, dict[str, Any]]:
    q1, q2 = rows["question1"].astype(str).tolist(), rows["question2"].astype(str).tolist()
    scores = version.predictor.served_scores(q1, q2)
    threshold = version.predictor.decision_threshold
    point = point_metrics(rows["is_duplicate"].to_numpy(dtype=np.int64), scores, threshold)
    return scores, threshold, {m: point[m] for m in names}


def _search_figures(version: ServedVersion, part: RetrievalSplit, cfg: SearchConfig) -> dict[str, np.ndarray]:
    predictor = version.predictor
    embeddings = predictor.encode(part.corpus)
    rerank = None if predictor.reranker is None else predictor.reranker.score
    ranked = served_rankings(part.val, part.corpus, embeddings, version.search["method"], version.search.get("hybrid") or {},
                             cfg=cfg, rerank=rerank, search_reranker=predictor.search_reranker)
    return per_query_metrics(ranked, part.val.relevant)


def describe(version: ServedVersion) -> dict[str, Any]:
    p = version.predictor
    return {"decided_by": p.decided_by, "threshold": p.decision_threshold, "decision": version.scorer(),
            "search": version.search_name()}


def judge(
    challenger: ServedVersion,
    production: ServedVersion | None,
    rows: pd.DataFrame,
    *,
    tolerances: dict[str, float],
    search_cfg: SearchConfig,
    resamples: int,
    seed: int,
    level: float,
    left_out: int = 0,
) -> dict[str, Any]:
    """The decision record: both sides' served figures on `rows`, each metric's paired difference and verdict.

    `rows`: the gate pairs to judge on (qdup's split columns); `left_out`: gate pairs dropped because production's
    fitted parts saw one of their questions (reported in the record).
    """
    y = rows["is_duplicate"].to_numpy(dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise QdupError(f"gate: {len(y)} pairs of one label left to judge on ({left_out} left out as seen by production); "
                        f"raise split.gate_fraction")
    pair_names = [m for m in tolerances if not m.startswith(RETRIEVAL_PREFIX)]
    search_names = [m.removeprefix(RETRIEVAL_PREFIX) for m in tolerances if m.startswith(RETRIEVAL_PREFIX)]
    unknown = [m for m in pair_names if m not in METRICS]
    if unknown:
        raise QdupError(f"gate metrics {unknown}: expected pair metrics of {list(METRICS)} or retrieval_*")
    part = query_part(rows)
    where = (f"the {JUDGE_SPLIT} split ({len(y):,} pairs, {int(y.sum()):,} duplicates; {len(part.val):,} search queries "
             f"in a corpus of {len(part.corpus):,} questions)")
    record: dict[str, Any] = {
        "split": JUDGE_SPLIT,
        "rows": {"pairs": len(y), "duplicates": int(y.sum()), "queries": len(part.val), "corpus": len(part.corpus),
                 "left_out_seen_by_production": int(left_out), "where": where},
        "tolerances": dict(tolerances),
    }
    sides = {"challenger": challenger} | ({"production": production} if production is not None else {})
    measured: dict[str, dict[str, Any]] = {}
    for side, version in sides.items():
        scores, threshold, pair = _pair_figures(version, rows, pair_names)
        per_query = _search_figures(version, part, search_cfg) if search_names else {}
        figures = pair | {f"{RETRIEVAL_PREFIX}{m}": float(per_query[m].mean()) for m in search_names}
        measured[side] = {"scores": scores, "threshold": threshold, "per_query": per_query}
        record[side] = {**describe(version), "version": version.label, "metrics": figures}
    if production is None:
        record |= {"promote": True, "reason": "first version: becomes production", "version": None, "comparisons": {}}
        return record
    groups = pair_groups(rows, JUDGE_SPLIT)
    query_groups = part.cluster[part.val.queries]
    comparisons: dict[str, Any] = {}
    refusals: list[str] = []
    for metric, tolerance in tolerances.items():
        c, p = record["challenger"]["metrics"][metric], record["production"]["metrics"][metric]
        paired = None
        if resamples > 0:
            if metric.startswith(RETRIEVAL_PREFIX):
                name = metric.removeprefix(RETRIEVAL_PREFIX)
                paired = paired_mean_difference(measured["challenger"]["per_query"][name], measured["production"]["per_query"][name],
                                                metric, resamples, seed, level, query_groups)
            else:
                paired = paired_difference(y, measured["challenger"]["scores"], measured["challenger"]["threshold"],
                                           measured["production"]["scores"], measured["production"]["threshold"], metric,
                                           resamples=resamples, seed=seed, level=level, groups=groups)
        ok = c is not None and p is not None and c >= p - tolerance
        interval = format_paired_difference(paired) if paired is not None else "no interval (evaluate.bootstrap_resamples=0)"
        served = "served search" if metric.startswith(RETRIEVAL_PREFIX) else "served decision"
        text = (f"{served} {metric} on {where}: challenger {_fmt(c)} ({describe(challenger)['search' if metric.startswith(RETRIEVAL_PREFIX) else 'decision']}) "
                f"vs production {production.label} {_fmt(p)} ({describe(production)['search' if metric.startswith(RETRIEVAL_PREFIX) else 'decision']}), "
                f"tolerance {tolerance}; {interval}")
        comparisons[metric] = {"challenger": c, "production": p, "tolerance": tolerance, "ok": ok, "text": text,
                               **({"paired_difference": paired} if paired is not None else {})}
        if not ok:
            refusals.append(text)
    promote = not refusals
    if promote:
        reason = (f"at least as good as production {production.label} within tolerance on every gate metric "
                  f"({', '.join(tolerances)}) on {where}")
    else:
        reason = "refused: worse than production beyond tolerance: " + " | ".join(refusals)
    record |= {"promote": promote, "reason": reason, "version": production.label, "comparisons": comparisons}
    return record


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"
