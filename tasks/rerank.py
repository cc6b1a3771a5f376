"""Prefect task around `qdup.stages.rerank.build_rerank` (reranker vs encoder vs baseline table artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from qdup.config import RetrainConfig
from qdup.errors import ConfigError
from qdup.runtime import import_tensorflow_quietly
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, run_log


def rerank_inputs(splits_key: str, vocab_key: str, train_key: str, evaluate_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the rerank stage's key hashes (the encoder's threshold comes with the evaluation's key)."""
    return {
        "splits": splits_key,
        "vocab": vocab_key,
        "train": train_key,
        "evaluate": evaluate_key,
        "max_length": cfg.model.max_length,
        "rerank": params(cfg.rerank),
        "baseline": {k: v for k, v in params(cfg.evaluate).items() if k.startswith(("baseline_", "bootstrap_"))},
        "seed": cfg.seed,
        "code": code_fingerprint("qdup.stages.rerank", "tasks.rerank"),
    }


def check_rerank_data(splits: StageResult, cfg: RetrainConfig) -> None:
    """Before training: a reranker needs both classes in calibration, at least rerank.folds of each, and a search
    reranker at least rerank.folds selection duplicates (exit 2 otherwise)."""
    if not cfg.rerank.enabled or not cfg.runs_through("rerank"):
        return
    cal = splits.manifest["splits"].get("calibration")
    rows, dups = (0, 0) if cal is None else (int(cal["rows"]), int(cal["duplicates"]))
    if min(dups, rows - dups) < cfg.rerank.folds:
        raise ConfigError(
            f"rerank.enabled: the reranker needs a labelled calibration split with at least rerank.folds={cfg.rerank.folds} "
            f"duplicates and non-duplicates; calibration has {dups} and {rows - dups} (set rerank.enabled=false)"
        )
    sel = splits.manifest["splits"].get("selection")
    sel_dups = 0 if sel is None else int(sel["duplicates"])
    if cfg.search.rerank_fit == "candidates" and cfg.runs_through("retrieval") and sel_dups < cfg.rerank.folds:
        # Each selection duplicate pair is at most one duplicate cluster: fewer than `folds` cannot fill the folds.
        raise ConfigError(
            f"search.rerank_fit=candidates: the search reranker is fitted on the selection queries' candidates, grouped "
            f"into rerank.folds={cfg.rerank.folds} folds by duplicate cluster; selection has {sel_dups} duplicate pairs "
            f"(set search.rerank_fit=pair, or give more labelled data)"
        )


@task(name="rerank", **TASK_OPTIONS)
def rerank_task(
    splits: StageResult, vocab: StageResult, train: StageResult, evaluation: StageResult, cfg: RetrainConfig
) -> StageResult:
    """Fit the pair reranker on calibration; test figures beside the encoder and the lexical baseline."""
    log = run_log()
    inputs = rerank_inputs(splits.key, vocab.key, train.key, evaluation.key, cfg)
    threshold = evaluation.manifest["metrics"]["threshold"]["value"]

    def build(out: Path) -> dict:
        import_tensorflow_quietly()
        from qdup.stages.rerank import build_rerank

        return build_rerank(splits.path, vocab.file("vocabulary.txt"), train.file("encoder.keras"), threshold, cfg.model,
                            cfg.evaluate, cfg.rerank, cfg.seed, out)

    result = run_stage("rerank", inputs, build, log)
    from qdup.evaluation.bootstrap import format_paired_difference
    from qdup.stages.rerank import table_rows

    rows = table_rows(result.manifest["metrics"])
    for row in rows:
        log("[rerank] " + ", ".join(f"{k}={v}" for k, v in row.items()))
    for key, diff in (result.manifest["metrics"].get("differences") or {}).items():
        log("[rerank] " + format_paired_difference(diff, "reranker", key.removeprefix("reranker_minus_")))
    serves = result.manifest.get("serves") or {}
    log(f"[rerank] {serves.get('scorer', 'reranker')} decides: {serves.get('why')}")
    create_table_artifact(key="qdup-rerank-metrics", table=rows,
                          description="reranker, encoder and lexical baseline on test (thresholds from calibration)")
    return result
