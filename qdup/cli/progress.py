"""`qdup run` on a terminal: one live line per stage (epochs, validation loss and time left while training) in place of
Prefect's log lines, which stay in the Prefect run (and on the terminal with --verbose); and the run's summary line."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdup.config import STAGES, RetrainConfig
from qdup.log import warning_text

# The stage prefix every stage's log lines carry (qdup.stagecache.run_stage and the tasks write "[stage] ...").
STAGE_PREFIX = re.compile(r"^\[(\w+)\] ")
# The line qdup.model.train logs after each epoch: "epoch 3/50 loss=... val_loss=... (12.3s)".
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+) loss=\S+ val_loss=([-\d.naninf]+) \(([\d.]+)s\)")
# Prefect task names that differ from the stage they run.
TASK_STAGES = {"vocabulary": "vocab"}
# Prefect's own records of a failed task or flow run (they carry the traceback): kept in the Prefect run, not printed;
# the one-line error is printed by `qdup` itself.
ENGINE_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class StageLine:
    """What the live line of one stage shows."""

    name: str
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    reused: bool = False
    failed: bool = False
    epoch: int = 0
    epochs: int = 0
    val_loss: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    last_epoch_at: float | None = None
    # The stage's warnings (a damaged cache entry, drift, a resumed training, a fallback), shown under its line.
    warnings: list[str] = field(default_factory=list)

    def block(self, now: float | None = None) -> str:
        """The stage line with its warnings under it."""
        return "\n".join([self.text(now), *(f"  ! {w}" for w in self.warnings)])

    def text(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self.failed:
            return f"✗ {self.name:<10} failed after {_duration(now - self.started)}"
        if self.finished is not None:
            how = "reused (unchanged inputs)" if self.reused else f"done in {_duration(self.finished - self.started)}"
            return f"✓ {self.name:<10} {how}" + (f", {self.epoch} epoch{'' if self.epoch == 1 else 's'}" if self.epochs else "")
        line = f"… {self.name:<10} running {_duration(now - self.started)}"
        if self.epochs:
            line += f"  epoch {self.epoch}/{self.epochs}"
            if self.val_loss is not None:
                line += f"  val loss {self.val_loss:.4f}"
            if self.epoch_seconds:
                mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
                since = now - self.last_epoch_at if self.last_epoch_at is not None else 0.0
                # Early stopping may end training sooner: the estimate is an upper bound.
                line += f"  at most ~{_duration(max(0.0, mean * (self.epochs - self.epoch) - since))} left"
        return line


class StageProgress(logging.Handler):
    """Turns the run's log records into one line per stage: shown live on a terminal (`render`, redrawn by rich),
    else printed once each as its stage ends (`live=False`: a log file or CI gets the lines as they happen)."""

    def __init__(self, console: Any, live: bool = True, warnings: bool = True):
        super().__init__(level=logging.INFO)
        self.console = console
        self.live = live
        self.warnings = warnings  # False (`qdup run --quiet`): the stage lines only
        self.lines: dict[str, StageLine] = {}
        self._printed: set[str] = set()
        self._lock = threading.Lock()

    def stage_of(self, record: logging.LogRecord, message: str) -> str | None:
        match = STAGE_PREFIX.match(message)
        if match and match.group(1) in STAGES:
            return match.group(1)
        task = getattr(record, "task_name", None)
        task = TASK_STAGES.get(task, task)
        return task if task in STAGES else None

    def running_stage(self) -> str | None:
        """The one stage running now, if exactly one is (a library's warning is then that stage's)."""
        running = [name for name, line in self.lines.items() if line.finished is None and not line.failed]
        return running[0] if len(running) == 1 else None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logger's problem; it must not stop the run
            return
        with self._lock:
            stage = self.stage_of(record, message)
            shown = self.warnings and self.shown(record, stage)
            if stage is None and shown:
                stage = self.running_stage()
            out = []
            if stage is not None:
                line = self.lines.get(stage)
                if line is None:
                    line = self.lines[stage] = StageLine(stage)
                if shown:
                    # One line each, under the stage line: the first line of the message without its marks.
                    line.warnings.append(warning_text(STAGE_PREFIX.sub("", message)).splitlines()[0] if message else "")
                    if stage in self._printed:  # off a terminal, after its line was printed
                        out.append(f"  ! {line.warnings[-1]}")
                else:
                    self.update(line, message)
                if not self.live and stage not in self._printed and (line.finished is not None or line.failed):
                    self._printed.add(stage)
                    out.append(line.block())
            elif shown:
                out.append(f"{record.name}: {warning_text(message).splitlines()[0] if message else ''}")
        for text in out:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def shown(record: logging.LogRecord, stage: str | None) -> bool:
        """A warning of the run itself; not Prefect's traceback of a failure (the one-line error says it), nor a
        library's advice (TensorFlow's retracing notes), which --verbose shows."""
        if record.levelno < logging.WARNING:
            return False
        if record.levelno >= logging.ERROR and record.name in ENGINE_LOGGERS:
            return False
        return stage is not None or record.name.split(".")[0] == "qdup"

    @staticmethod
    def update(line: StageLine, message: str) -> None:
        body = STAGE_PREFIX.sub("", message)
        epoch = EPOCH_LINE.search(body)
        if epoch:
            line.epoch, line.epochs = int(epoch.group(1)), int(epoch.group(2))
            line.val_loss = float(epoch.group(3))
            line.epoch_seconds.append(float(epoch.group(4)))
            line.last_epoch_at = time.monotonic()
        elif "unchanged inputs and parameters: skipping" in body:
            line.reused = True
        elif body.startswith("done in") or body.startswith("Finished in state Completed"):
            line.finished = line.finished or time.monotonic()
        elif body.startswith("Finished in state") and "Completed" not in body:
            line.failed = True
        if line.reused and line.finished is None:
            line.finished = time.monotonic()

    def render(self) -> Any:
        from rich.text import Text

        with self._lock:
            now = time.monotonic()
            return Text("\n".join(line.block(now) for line in self.lines.values()))


def _console_handlers() -> list[tuple[logging.Logger, logging.Handler]]:
    """Prefect's handlers that write to the terminal (its console handler on the root logger and on its server's loggers)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    found = []
    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in ("uvicorn", "fastapi", "prefect"))]:
        found += [(logger, h) for h in logger.handlers if isinstance(h, PrefectConsoleHandler)]
    return found


def run_with_progress(config: RetrainConfig, *, verbose: bool = False, debug: bool = False,
                      quiet: bool = False) -> dict[str, str]:
    """Run the retrain flow; unless verbose or debug, Prefect's terminal lines are replaced by live stage lines
    (with each stage's warnings under its line, unless quiet)."""
    from flows.retrain import retrain  # configures Prefect's logging

    if verbose or debug:
        return retrain(config)
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    progress = StageProgress(console, live=console.is_terminal, warnings=not quiet)
    removed = _console_handlers()  # the Prefect run keeps every line (its API handler); the terminal gets the stages
    run_loggers = [logging.getLogger(name) for name in ENGINE_LOGGERS]
    levels = [lg.level for lg in run_loggers]
    for logger, handler in removed:
        logger.removeHandler(handler)
    root = logging.getLogger()
    root.addHandler(progress)
    for lg in run_loggers:  # the stage and epoch lines are INFO, whatever PREFECT_LOGGING_LEVEL says
        lg.setLevel(logging.INFO)
    try:
        # Re-rendered twice a second (elapsed times and estimates move) and once more when the run ends.
        if not progress.live:
            return retrain(config)
        with Live(console=console, refresh_per_second=2, transient=False, get_renderable=progress.render):
            return retrain(config)
    finally:
        root.removeHandler(progress)
        for lg, level in zip(run_loggers, levels, strict=True):
            lg.setLevel(level)
        # Prefect's console handlers stay off: its temporary server logs its shutdown when the process exits, after
        # the run, and that line is not the user's business either.


def summary_line(outputs: dict[str, str], aliases: list[str] | None = None) -> str:
    """One line: what the run published (or which published version it matches, and whether that one is production:
    `aliases` are its aliases now), its test ROC-AUC beside the baseline's, and whether the data was generated."""
    from qdup.data.generated import generated_record
    from qdup.fileio import read_json

    record = read_json(Path(outputs["run_record"]))
    stages = record.get("stages") or {}
    version = outputs.get("version")
    if version and outputs.get("published") == "true":
        head = f"version {version} published"
        head += ", promoted to production" if outputs.get("promoted") == "true" else ", not promoted"
    elif version:
        same = f"version {version} has this run's data, parameters and code"
        if "production" in (aliases or []):
            head = f"{same} and is production already: nothing new to publish"
        else:
            head = f"{same} (published before, not production): nothing new to publish; to serve it: qdup promote -m {version}"
    else:
        head = f"stopped after {record.get('stages_done', ['?'])[-1]} (nothing published)"
    metrics = ((stages.get("evaluate") or {}).get("manifest") or {}).get("metrics") or {}
    roc = ((metrics.get("test") or {}).get("ranking") or {}).get("roc_auc")
    base = ((((metrics.get("baseline") or {}).get("test") or {}).get("ranking")) or {}).get("roc_auc")
    if roc is not None:
        head += f"; test ROC-AUC {roc:.4f}" + (f" (lexical baseline {base:.4f})" if base is not None else "")
    joined = ((stages.get("splits") or {}).get("manifest") or {}).get("feedback")
    if joined:
        snapshot = (stages.get("feedback") or {}).get("key") or "?"
        head += (f"; feedback snapshot {snapshot[:12]}: {joined['rows']:,} rows, {joined['pairs']:,} pairs "
                 f"({joined['conflicting_pairs']:,} conflicting), +{joined['added']['train']:,} train, "
                 f"+{joined['added']['negatives']:,} negatives, {joined['held_out_test_question']:,} held out (a question test holds)")
    sha = ((stages.get("fetch") or {}).get("manifest") or {}).get("sha256")
    if sha and generated_record(sha):
        head += "; trained on data generated by `qdup demo-data`"
        if roc is not None:
            head += ": these figures measure the generator, not the model on real questions (docs/results/quality.md)"
    return head
