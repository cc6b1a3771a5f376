"""Stage `drift` (after validate): the new dataset against production's profile; and the profile a version keeps.

`build_drift` compares and writes drift.json (the GE result) and drift.md; `build_profile` writes
the profile files (profile.json and the two hash arrays) that a version keeps for the next run's
comparison. The profile needs the version's vocabulary (for the OOV share), so it is built once
the vocab stage has run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from qdup.config import ValidateConfig
from qdup.data import drift, profile
from qdup.model.vocabulary_file import read_vocabulary


def build_drift(
    validated_file: Path,
    cfg: ValidateConfig,
    out_dir: Path,
    production_version: str | None = None,
    production_profile_dir: Path | None = None,
    production_vocabulary_file: Path | None = None,
    production_reranker_meta: Path | None = None,
) -> dict[str, Any]:
    """Check the validated dataset against production's profile (none: the first run); write the report to `out_dir`.

    Raises `qdup.data.drift.DriftViolation` (a ContractViolation, holding the GE report) after writing
    the report when drift is found and cfg.drift == "block".
    """
    production = None
    vocabulary = None
    if production_version is not None and cfg.drift != "off":
        if production_profile_dir is None or not (Path(production_profile_dir) / profile.PROFILE_FILE).is_file():
            production_version = None  # a production version from before profiles were kept: treated as none
        else:
            production = profile.read_profile(Path(production_profile_dir))
            if production_vocabulary_file is not None:
                vocabulary = read_vocabulary(Path(production_vocabulary_file))
    df = pq.read_table(validated_file).to_pandas()
    report = drift.check_drift(
        df, production, vocabulary, cfg.drift, cfg.drift_tolerances,
        production_version=production_version, data_name="dataset", shown=cfg.failed_rows_shown,
    )
    report.write(Path(out_dir), "drift")
    report.raise_if_blocking(str(validated_file))
    return {**report.as_dict(), "report": "drift.md", "result": "drift.json",
            "reranker_fit": reranker_fit(df, production_reranker_meta, cfg) if production is not None else None}


def reranker_fit(df: Any, reranker_meta: Path | None, cfg: ValidateConfig) -> dict[str, Any] | None:
    """The new labelled pairs against the rows production's reranker was fitted on (word overlap, easy negatives):
    warnings only (a reranker fitted on other-looking pairs may be worse than the encoder on these); None without one."""
    if reranker_meta is None or not Path(reranker_meta).is_file():
        return None
    from qdup.data.questions import overlap_profile, overlap_warnings
    from qdup.fileio import read_json

    fitted = read_json(Path(reranker_meta)).get("fitting_profile")
    if not fitted:
        return None
    new = overlap_profile(df)
    t = cfg.drift_tolerances
    return {"new": new, "fitted": fitted,
            "warnings": overlap_warnings(new, fitted, t.reranker_overlap_distance, t.reranker_easy_negative_share)}


def build_profile(validated_file: Path, vocabulary_file: Path, out_dir: Path) -> dict[str, Any]:
    """Profile the validated dataset under this version's vocabulary; write the profile files to `out_dir`."""
    df = pq.read_table(validated_file).to_pandas()
    dataset_profile = profile.profile_dataset(df, read_vocabulary(Path(vocabulary_file)))
    paths = profile.write_profile(dataset_profile, Path(out_dir))
    return {**dataset_profile.summary, "files": sorted(p.name for p in paths)}
