"""Serve the version an alias points at, and follow the alias: load beside, verify, switch atomically."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdup.errors import QdupError
from qdup.registry.store import ArtifactStore
from qdup.serving.export import PROBE_PAIRS
from qdup.serving.predictor import SMALL_BATCH, Predictor, load_inference
from qdup.serving.searcher import Searcher, load_searcher

log = logging.getLogger("qdup.serving")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def version_dir(store: ArtifactStore, version: str) -> Path:
    """The local folder of a version, every file checked against its manifest's sha256 (the one
    place the server opens the store): a damaged version is refused before anything is loaded."""
    return store.open_version(version)


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified version. Never changed: a switch replaces the whole object."""

    version: str
    predictor: Predictor
    threshold: float
    manifest: dict[str, Any]
    searcher: Searcher | None
    loaded_at: str = field(default_factory=_now)


def manifest_threshold(manifest: dict[str, Any]) -> float | None:
    """The threshold a version's manifest records (`{"value": ...}` as the pipeline publishes it), if any."""
    recorded = manifest.get("threshold")
    if isinstance(recorded, dict):
        recorded = recorded.get("value")
    if recorded is None:
        return None
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)):
        raise QdupError(f"manifest threshold {recorded!r} is not a number")
    return float(recorded)


def verify(predictor: Predictor, manifest: dict[str, Any]) -> None:
    """Refuse a loaded model whose probe answers are not cosines or whose threshold is not its manifest's.

    The probes go through both of the predictor's paths (one graph call for small inputs, the
    deduplicating batch path above SMALL_BATCH pairs), which also traces both before the first
    request arrives.
    """
    if not (math.isfinite(predictor.threshold) and -1.0 <= predictor.threshold <= 1.0):
        raise QdupError(f"threshold {predictor.threshold!r} is not a cosine in [-1, 1]")
    published = manifest_threshold(manifest)
    if published is not None and abs(published - predictor.threshold) > 1e-9:
        raise QdupError(f"model threshold {predictor.threshold} differs from the manifest's {published}")
    small = ([a for a, _ in PROBE_PAIRS], [b for _, b in PROBE_PAIRS])
    large = ([f"{a} {i}" for i in range(SMALL_BATCH + 1) for a in small[0][:1]], [small[1][0]] * (SMALL_BATCH + 1))
    for q1, q2 in (small, large):
        sims = predictor.similarity(q1, q2)
        if sims.shape != (len(q1),) or not np.all(np.isfinite(sims)) or np.any(np.abs(sims) > 1.0):
            raise QdupError(f"probe pairs gave {sims.tolist()[:8]}..., not {len(q1)} cosines")


def load_served(store: ArtifactStore, version: str) -> ServedModel:
    """Load a version's exported model and index and verify them; any failure raises."""
    folder = version_dir(store, version)
    manifest = store.manifest(version)
    predictor = load_inference(folder / "model")
    verify(predictor, manifest)
    return ServedModel(version, predictor, predictor.threshold, manifest, load_searcher(folder))


class ModelFollower:
    """Holds the served model; a background thread re-resolves the reference and switches on a move.

    The switch is one attribute assignment (atomic for readers): a request takes `current` once
    and keeps that object, so requests in flight finish on the version they started with. A
    version that fails to load or verify is never switched to; the old one keeps serving and the
    failure is logged and kept in `last_error` (a failed version is not retried: versions are
    immutable).
    """

    def __init__(
        self,
        store: ArtifactStore,
        ref: str,
        poll_s: float = 5.0,
        loader: Callable[[ArtifactStore, str], ServedModel] = load_served,
    ):
        self.store = store
        self.ref = ref
        self.poll_s = poll_s
        self._loader = loader
        self._current: ServedModel | None = None
        self.last_error: dict[str, Any] | None = None
        self.switches: list[dict[str, Any]] = []
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def load_initial(self) -> ServedModel:
        """Resolve and load the reference now; raises when it cannot be served."""
        with self._check_lock:
            version = self.store.resolve(self.ref)
            served = self._loader(self.store, version)
            self._switch(served)
            return served

    def check(self) -> bool:
        """Re-resolve the reference; load, verify and switch when it points elsewhere. True on a switch."""
        with self._check_lock:
            try:
                version = self.store.resolve(self.ref)
            except Exception as exc:  # the store may be briefly unreadable: keep serving, say why
                self._record_error(None, f"cannot resolve {self.ref!r}: {exc}")
                return False
            current = self._current
            if current is not None and current.version == version:
                return False
            if version in self._failed:
                return False
            try:
                served = self._loader(self.store, version)
            except Exception as exc:
                self._failed.add(version)
                self._record_error(version, f"{type(exc).__name__}: {exc}")
                return False
            self._switch(served)
            return True

    def _switch(self, served: ServedModel) -> None:
        previous = self._current
        self._current = served
        self.last_error = None
        entry = {"from": previous.version if previous else None, "to": served.version, "at": _now()}
        self.switches.append(entry)
        log.info("serving %s (%s) from %s", self.ref, served.version, entry["from"] or "start")

    def _record_error(self, version: str | None, message: str) -> None:
        serving = self._current.version if self._current else None
        self.last_error = {"version": version, "error": message, "at": _now(), "still_serving": serving}
        log.error("not switching %s to %s: %s; still serving %s", self.ref, version, message, serving)

    def start(self) -> None:
        """Start polling in a background thread (which loads first when nothing is loaded yet)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qdup-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._current is None:
            self.check()
        while not self._stop.wait(self.poll_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
