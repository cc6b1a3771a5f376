"""Stage `gate` (after index, before publish): judge the challenger as it serves against production as it serves.

Writes decision.json (`qdup.registry.judge.judge`'s record, with the lexical-baseline check of the evaluation) and
fitted_questions.npy: the hashed questions of every split this version's fitted parts and choices saw (train,
negatives, val, calibration, selection), which the version keeps so that a later challenger's gate can leave out
the rows this version saw when it is production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qdup.config import CHOICE_SPLIT, JUDGE_SPLIT, RetrainConfig, SearchConfig
from qdup.data.profile import QUESTION_HASHES_FILE, VERSION_PROFILE_DIR
from qdup.data.questions import question_hashes
from qdup.data.splits import read_split
from qdup.errors import QdupError
from qdup.evaluation.bootstrap import METRICS
from qdup.fileio import atomic_write_bytes, atomic_write_json
from qdup.registry.gate import check_baseline, with_baseline
from qdup.registry.judge import ServedVersion, default_search, gate_metrics, judge
from qdup.registry.store import ArtifactStore
from qdup.serving.predictor import load_inference

DECISION_FILE = "decision.json"
FITTED_QUESTIONS_FILE = "fitted_questions.npy"
# Where a version keeps them (next to its decision record).
VERSION_GATE_DIR = "gate"
# The splits whose questions the version's fitted parts (encoder, thresholds, reranker) and choices saw.
FITTED_SPLITS = ("train", "negatives", "val", "calibration", CHOICE_SPLIT)


def _npy_bytes(values: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, values, allow_pickle=False)
    return buf.getvalue()


def fitted_questions(splits_dir: Path) -> np.ndarray:
    """Sorted distinct question hashes of the fitted splits."""
    frames = [read_split(Path(splits_dir) / f"{name}.parquet") for name in FITTED_SPLITS]
    both = pd.concat([pd.concat([f["question1"], f["question2"]]) for f in frames], ignore_index=True)
    return question_hashes(both.tolist())


def production_seen(version_dir: Path) -> tuple[np.ndarray, str]:
    """The question hashes production's fitted parts saw, and where they come from: its gate record's file, or, for a
    version from before it was kept, every question of its data profile (a superset: more rows left out, never fewer)."""
    own = Path(version_dir) / VERSION_GATE_DIR / FITTED_QUESTIONS_FILE
    if own.is_file():
        return np.load(own, allow_pickle=False), "production's fitted questions"
    profile = Path(version_dir) / VERSION_PROFILE_DIR / QUESTION_HASHES_FILE
    if profile.is_file():
        return np.load(profile, allow_pickle=False), "every question of production's data (it keeps no fitted-question record)"
    raise QdupError(f"{version_dir}: production keeps neither {VERSION_GATE_DIR}/{FITTED_QUESTIONS_FILE} nor a data profile; "
                    "the gate cannot tell which rows it saw (promote by hand with `qdup promote` after checking it)")


def build_gate(
    splits_dir: Path,
    model_dir: Path,
    search_defaults: dict[str, Any],
    evaluate_metrics: dict[str, Any],
    cfg: RetrainConfig,
    out_dir: Path,
    production: str | None = None,
) -> dict[str, Any]:
    """Judge the export at `model_dir` (its index's `search_defaults`) against `production` of the configured store."""
    out_dir = Path(out_dir)
    rows = read_split(Path(splits_dir) / f"{JUDGE_SPLIT}.parquet")
    fitted = fitted_questions(splits_dir)
    atomic_write_bytes(out_dir / FITTED_QUESTIONS_FILE, _npy_bytes(fitted))
    challenger = ServedVersion("challenger", load_inference(Path(model_dir)), default_search(search_defaults))
    prod, left_out, seen_from, unjudgeable = None, 0, None, None
    if production is not None:
        store = ArtifactStore(cfg.publish.store_url, registry_url=cfg.publish.registry_url)
        version_dir = store.open_version(production)
        seen, seen_from = production_seen(version_dir)
        h1, h2 = question_hashes_per_row(rows["question1"]), question_hashes_per_row(rows["question2"])
        keep = ~(np.isin(h1, seen) | np.isin(h2, seen))
        left_out = int((~keep).sum())
        kept = rows[keep].reset_index(drop=True)
        if kept["is_duplicate"].nunique() < 2:
            # Nothing left that production never saw: measured alone, and refused (a gate that cannot judge never promotes).
            unjudgeable = (f"refused: cannot compare with production {production}: of the {len(rows):,} {JUDGE_SPLIT} pairs, "
                           f"{left_out:,} hold a question production's fitted parts saw ({seen_from}), leaving {len(kept):,} "
                           f"of one label at most; promote by hand with `qdup promote` after checking it")
        else:
            rows = kept
        manifest = store.manifest(production)
        defaults = (manifest.get("index") or {}).get("search_defaults") or manifest.get("retrieval")
        prod = ServedVersion(production, load_inference(version_dir / "model"), default_search(defaults))
    record = judge(
        challenger, None if unjudgeable else prod, rows,
        tolerances=gate_metrics(cfg.publish.tolerances, cfg.publish.gate_metric, cfg.publish.tolerance),
        search_cfg=SearchConfig(**cfg.search.model_dump()), resamples=cfg.evaluate.bootstrap_resamples, seed=cfg.seed,
        level=cfg.evaluate.bootstrap_level, left_out=left_out,
    )
    if seen_from is not None:
        record["rows"]["production_seen_from"] = seen_from
    if unjudgeable:
        record |= {"promote": False, "reason": unjudgeable, "version": production}
    # The lexical-baseline requirement (publish.min_lift_over_baseline) reads the evaluation's calibration figures.
    metric = cfg.publish.gate_metric if cfg.publish.gate_metric in METRICS else "roc_auc"
    record = with_baseline(record, check_baseline(evaluate_metrics, metric, cfg.publish.min_lift_over_baseline))
    atomic_write_json(out_dir / DECISION_FILE, record)
    return {"record": record, "decision": DECISION_FILE, "fitted_questions": FITTED_QUESTIONS_FILE, "production": production}


def question_hashes_per_row(texts: pd.Series) -> np.ndarray:
    """Each row's question hash (the same hash as `question_hashes`, not deduplicated)."""
    uniques, codes = np.unique(texts.astype(str).to_numpy(), return_inverse=True)
    hashes = np.array([question_hashes([u])[0] for u in uniques], dtype=np.uint64)
    return hashes[codes]
