"""A benchmark run's results: its JSON (figures and provenance) and its Markdown page, whose header names the command,
the commit, the machine and its load."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness.machine import loadavg, provenance


class Run:
    """One run of a benchmark: `record` starts as its provenance (command, commit, dirty, started, machine);
    `finish()` adds the seconds it took and the load average at the end."""

    def __init__(self, prog: str, argv: Sequence[str] | None = None, machine: dict[str, Any] | None = None):
        self._t0 = time.perf_counter()
        self.record: dict[str, Any] = provenance(prog, argv, machine)

    def finish(self, results: dict[str, Any] | None = None) -> dict[str, Any]:
        """The provenance with `results` merged in (its own keys win), `total_seconds` and the machine's `loadavg_end`."""
        out = {**self.record, **(results or {})}
        out["total_seconds"] = round(time.perf_counter() - self._t0, 1)
        machine = out.get("machine")
        if isinstance(machine, dict):
            machine["loadavg_end"] = loadavg()
        return out

    def save(self, out: Path | None, json_name: str, results: dict[str, Any], md_name: str | None = None,
             render: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
        """finish(results), write its JSON (and with `render`, its page) to `out` (unless None), print the page (else
        the JSON); the finished results."""
        done = self.finish(results)
        text = render(done) if render is not None else None
        if out is not None:
            write_results(out, json_name, done, md_name, text)
        print(text if text is not None else json.dumps(done, indent=2, default=str))
        return done


def _load(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(f"{x:.2f}" if isinstance(x, (int, float)) else str(x) for x in value)
    return "?" if value is None else str(value)


def machine_line(machine: Any) -> str:
    """One line for a machine record (`machine_info`'s dict, or the text an older results file holds)."""
    if not isinstance(machine, dict):
        return str(machine)
    cores = machine.get("cpu_count", machine.get("cpus", "?"))
    line = f"{machine.get('cpu_model', '?')}, {cores} CPUs ({machine.get('usable_cores', '?')} usable)"
    if machine.get("ram_gib") is not None:
        line += f", {machine['ram_gib']:.1f} GiB RAM"
    line += f"; load average {_load(machine.get('loadavg_start'))} at start"
    if machine.get("loadavg_end") is not None:
        line += f", {_load(machine['loadavg_end'])} at end"
    return line


def header(results: dict[str, Any]) -> list[str]:
    """The page's header lines: command, commit (and whether the tree was dirty), start and duration, machine and load."""
    took = results.get("total_seconds")
    lines = [f"Command: `{results.get('command', '?')}`  ",
             f"Commit {results.get('commit', 'not recorded')}, started {results.get('started', '?')}"
             + (f", took {took:,.0f} s" if isinstance(took, (int, float)) else "") + ".  "]
    if results.get("machine") is not None:
        lines.append(f"Machine: {machine_line(results['machine'])}.  ")
    return lines


def page(title: str, results: dict[str, Any], body: Sequence[str]) -> str:
    """A results page: `# title`, the header, then the benchmark's own lines."""
    return "\n".join([f"# {title}", "", *header(results), "", *body]).rstrip("\n") + "\n"


def write_results(out: Path, json_name: str, results: dict[str, Any], md_name: str | None = None,
                  markdown: str | None = None) -> list[Path]:
    """Write results as JSON (2-space indent) to out/json_name and, when given, the Markdown page to out/md_name."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / json_name]
    written[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    if md_name is not None and markdown is not None:
        written.append(out / md_name)
        written[1].write_text(markdown)
    return written
