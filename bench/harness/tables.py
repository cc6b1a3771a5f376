"""Markdown tables, number formats and target/verdict rows of the benchmarks' pages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

GIB = 1024**3
MIB = 1024**2


def dig(d: Any, *keys: Any) -> Any:
    """d[k1][k2]... or None where a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; `|` and newlines inside cells are escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
    return "\n".join(lines)


def fmt(v: Any, digits: int = 2) -> str:
    """A number with thousands separators (floats to `digits` places); "—" for None. Not the model card's cell format
    (qdup.registry.card), which leaves them out: benchmark figures run into the hundreds of thousands."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def mib(b: Any) -> str:
    """Bytes as whole MiB; "—" for None."""
    return "—" if b is None else f"{b / MIB:,.0f}"


def measured(v: float | None, unit: str, digits: int = 1) -> str:
    """A measured figure with its unit, or "not measured"."""
    return "not measured" if v is None else f"{v:,.{digits}f} {unit}"


# ---------------------------------------------------------------- verdicts


def check(value: float | None, limit: float, higher: bool = False) -> bool | None:
    """Whether `value` meets the target (at most `limit`, or with higher=True at least); None when not measured."""
    if value is None:
        return None
    return value >= limit if higher else value <= limit


def met_when(ok: bool, *values: Any) -> bool | None:
    """`ok`, or None (not measured) when one of the values it was computed from is missing."""
    return None if any(v is None for v in values) else ok


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def miss_text(value: float, limit: float) -> str:
    """How far a missed target is off, relative to the target: "by 10%"."""
    return f"by {abs(value - limit) / limit:.0%}"


def verdict(value: float | None, limit: float, higher: bool = False) -> str:
    """met_text of `check`, with how far off a missed target is."""
    met = check(value, limit, higher)
    return met_text(met) + (f" ({miss_text(value, limit)})" if met is False else "")


def spare_text(unit: str, value: float, limit: float) -> str:
    """The margin to an upper limit: what is left, or how far over it is."""
    if value <= limit:
        return f"{limit - value:.1f} {unit} to spare"
    return f"{value - limit:.1f} {unit} over ({value / limit:.1f}x the target)"


def target_row(name: str, target: str, measured_text: str, met: bool | None, margin: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """One row of a targets table (results JSON's `targets`): what, the target, the measured text, met?, the margin."""
    return {"name": name, "target": target, "measured": measured_text, "met": met, "margin": margin, **extra}


def limit_row(name: str, target: str, value: float | None, measured_text: str, limit: float, unit: str) -> dict[str, Any]:
    """A row for an upper limit; `measured_text` is shown only when `value` was measured."""
    if value is None:
        return target_row(name, target, "not measured", None)
    return target_row(name, target, measured_text, value <= limit, spare_text(unit, value, limit))


def targets_table(rows: Sequence[dict[str, Any]]) -> str:
    """The Markdown of target rows: target, wanted, measured, met?, margin."""
    return table(["target", "wanted", "measured", "met?", "margin"],
                 [[r["name"], r["target"], r["measured"], met_text(r["met"]), r.get("margin") or ""] for r in rows])
