"""Data contracts: strict TSV parsing and blocking Great Expectations validation with reports."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qdup.data.columns import COLUMNS, INT_COLUMNS, TEXT_COLUMNS  # noqa: F401  (TEXT_COLUMNS: contracts.TEXT_COLUMNS)
from qdup.errors import DataContractError
from qdup.fileio import atomic_write_json, atomic_write_text
from qdup.paths import validate_name

_SNIFF_BYTES = 64 * 1024
_HEADER = "\t".join(COLUMNS)


# ---------------------------------------------------------------- parsing


def sniff_tsv(path: Path) -> None:
    """Refuse files that cannot be the TSV at all, before pandas turns them into odd frames."""
    if not path.is_file():
        raise DataContractError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise DataContractError(f"{path}: the file is empty (0 bytes); expected a TSV with header {_HEADER!r}")
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise DataContractError(f"{path}: binary data (NUL bytes in the first {len(head)} bytes), not a UTF-8 TSV")
    try:
        # A multi-byte character may straddle the sniff boundary; only the tail may be partial.
        head.decode("utf-8") if len(head) < _SNIFF_BYTES else head[:-4].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataContractError(f"{path}: not UTF-8 text (byte {exc.start}: {head[exc.start:exc.start + 8]!r}); binary garbage?") from exc
    lowered = head.lstrip()[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:200]:
        raise DataContractError(f"{path}: this is an HTML page, not the TSV (first bytes: {head[:80]!r})")


def read_tsv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse the TSV; return (raw text frame, typed frame).

    The typed frame has float columns for the integer fields with NaN wherever the raw text was
    not a whole number, so that the data contract (not a pandas exception) reports bad values;
    question fields are str with NaN only for empty fields (the literal text "null" is a question).
    """
    sniff_tsv(path)
    try:
        raw = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, na_values=[""],
            quoting=0, engine="c", on_bad_lines="error",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataContractError(f"{path}: not a well-formed TSV: {exc}") from exc
    typed = pd.DataFrame(index=raw.index)
    for col in raw.columns:
        if col in INT_COLUMNS:
            num = pd.to_numeric(raw[col], errors="coerce")
            # "1.5" and "1e3" parse as numbers but are not whole-number labels or ids.
            whole = num.where(np.isfinite(num) & (num == np.floor(num)))
            text_ok = raw[col].str.fullmatch(r"\s*-?\d+\s*", na=False)
            typed[col] = whole.where(text_ok)
        else:
            typed[col] = raw[col]
    return raw, typed


def to_int_frame(typed: pd.DataFrame) -> pd.DataFrame:
    """The typed frame with integer dtypes, for a frame that passed the raw contract."""
    out = typed[COLUMNS].copy()
    for col in ("id", "qid1", "qid2"):
        out[col] = out[col].astype("int64")
    out["is_duplicate"] = out["is_duplicate"].astype("int8")
    return out


# ---------------------------------------------------------------- suites


def contracts_dir() -> Path:
    return Path(str(resources.files("data_contracts")))


def suite_path(name: str) -> Path:
    return contracts_dir() / f"{validate_name(name, 'suite name')}.json"


def load_suite_dict(name: str) -> dict[str, Any]:
    path = suite_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in contracts_dir().glob("*.json"))
        raise DataContractError(f"unknown data contract {name!r}; known: {known}")
    with open(path, encoding="utf-8") as f:
        suite = json.load(f)
    if suite.get("name") != name:
        raise DataContractError(f"{path}: suite name {suite.get('name')!r} does not match its file name")
    return suite


def _build_suite(suite: dict[str, Any]):
    import great_expectations as gx

    built = gx.ExpectationSuite(**suite)
    # GE logs and skips invalid expectations; a contract that silently loses a check is no contract.
    if len(built.expectations) != len(suite["expectations"]):
        raise DataContractError(
            f"data contract {suite['name']!r}: only {len(built.expectations)} of "
            f"{len(suite['expectations'])} expectations are valid for this Great Expectations version"
        )
    return built


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


# ---------------------------------------------------------------- validation


@dataclass
class Failure:
    expectation: str
    column: str | None
    description: str
    observed: str
    examples: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        col = f" on column {self.column!r}" if self.column else ""
        ex = ""
        if self.examples:
            ex = "; e.g. " + ", ".join(
                "row {row} (id {id}): {value}".format(**e) for e in self.examples
            )
        return f"{self.expectation}{col} ({self.description}): {self.observed}{ex}"


@dataclass
class ContractReport:
    suite: str
    data_name: str
    success: bool
    evaluated: int
    failures: list[Failure]
    statistics: dict[str, Any]
    result: dict[str, Any]

    def markdown(self) -> str:
        head = "PASSED" if self.success else "FAILED"
        lines = [
            f"# Data contract `{self.suite}` on `{self.data_name}`: {head}",
            "",
            f"{self.evaluated} expectations evaluated, {len(self.failures)} failed.",
            "",
            "| expectation | column | description | result |",
            "|---|---|---|---|",
        ]
        for r in self.result.get("results", []):
            cfg = r["expectation_config"]
            kw = cfg.get("kwargs", {})
            desc = cfg.get("meta", {}).get("description", "")
            res = "ok" if r["success"] else "**FAILED**"
            lines.append(f"| {cfg['type']} | {kw.get('column', '')} | {desc} | {res} |")
        if self.failures:
            lines += ["", "## Failures", ""]
            lines += [f"- {f.line()}" for f in self.failures]
        return "\n".join(lines) + "\n"

    def error_message(self, file: str) -> str:
        body = "\n".join(f"  - {f.line()}" for f in self.failures)
        return f"{file}: data contract {self.suite!r} failed {len(self.failures)} of {self.evaluated} expectations:\n{body}"

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        atomic_write_json(json_path, self.result)
        atomic_write_text(md_path, self.markdown())
        return json_path, md_path


class ContractViolation(DataContractError):
    """A data contract failed; carries the report so that the caller can keep it with the run."""

    def __init__(self, report: ContractReport, file: str, stem: str = "validation-raw"):
        super().__init__(report.error_message(file))
        self.report = report
        self.file = file
        self.stem = stem


def _describe(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()  # 1, not np.int64(1)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "<missing>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def _failure(r: dict[str, Any], raw: pd.DataFrame | None, shown: int) -> Failure:
    cfg = r["expectation_config"]
    kw = cfg.get("kwargs", {})
    column = kw.get("column")
    desc = cfg.get("meta", {}).get("description", "")
    info = r.get("exception_info") or {}
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    if info.get("raised_exception"):
        messages.append(info.get("exception_message"))
    res = r.get("result") or {}
    examples: list[dict[str, Any]] = []
    if messages:
        observed = "could not be evaluated: " + "; ".join(dict.fromkeys(m for m in messages if m))
    elif "unexpected_count" in res:
        observed = f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected ({res.get('unexpected_percent', 0):.4g}%)"
        for idx in (res.get("partial_unexpected_index_list") or [])[:shown]:
            value = raw.at[idx, column] if raw is not None and column in raw.columns and idx in raw.index else None
            row_id = raw.at[idx, "id"] if raw is not None and "id" in raw.columns and idx in raw.index else None
            examples.append({"row": int(idx), "id": row_id, "value": _describe(value)})
    else:
        value = res.get("observed_value")
        # numpy scalars print as np.float64(...); people read the plain number.
        observed = f"observed {(value.item() if hasattr(value, 'item') else value)!r}"
    return Failure(cfg["type"], column, desc, observed, examples)


def validate_frame(
    frame: pd.DataFrame, suite_name: str, data_name: str, raw: pd.DataFrame | None = None, shown: int = 5
) -> ContractReport:
    """Run a named suite on a frame; `raw` (same index) supplies the original text of offending rows."""
    return validate_frame_with_suite(frame, load_suite_dict(suite_name), data_name, raw=raw, shown=shown)


def validate_frame_with_suite(
    frame: pd.DataFrame, suite_dict: dict[str, Any], data_name: str, raw: pd.DataFrame | None = None, shown: int = 5
) -> ContractReport:
    """Run a suite given as a dict (the JSON shape of data_contracts/*.json) on a frame, e.g. a generated one."""
    suite_name = validate_name(str(suite_dict.get("name", "")), "suite name")
    suite = _build_suite(suite_dict)
    ctx = _context()
    source = ctx.data_sources.add_or_update_pandas(f"qdup-{os.getpid()}")
    asset_name = f"{data_name}-{suite_name}"
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(asset_name)
    batch_def = asset.add_batch_definition_whole_dataframe(f"b{len(asset.batch_definitions)}")
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": max(shown, 5)})
    result_dict = result.to_json_dict()
    failures = [_failure(r, raw if raw is not None else frame, shown) for r in result_dict["results"] if not r["success"]]
    return ContractReport(
        suite=suite_name,
        data_name=data_name,
        success=bool(result_dict["success"]) and not failures,
        evaluated=len(result_dict["results"]),
        failures=failures,
        statistics=result_dict.get("statistics", {}),
        result=result_dict,
    )
