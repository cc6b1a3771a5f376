"""Serve the version an alias points at, and follow the alias: load beside, verify, switch atomically."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from qdup.errors import QdupError, TamperedVersionError
from qdup.serving.predictor import PROBE_PAIRS, Predictor, load_inference
from qdup.serving.searcher import Searcher, load_searcher

log = logging.getLogger("qdup.serving")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class VersionStore(Protocol):
    """What the server needs of a store (`qdup.registry.store.ArtifactStore`, which the app layer passes in): serving
    sits below the registry, so it names the store's methods rather than importing it."""

    def resolve(self, ref: str) -> str: ...

    def manifest(self, version: str) -> dict[str, Any]: ...

    def open_version(self, ref: str) -> Path: ...

    def aliases_of(self, version: str) -> list[str]: ...


def version_dir(store: VersionStore, version: str) -> Path:
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

    The probes are a few pairs and a batch of many (several length buckets and batches), which also
    warms the runtime before the first request arrives.
    """
    if not (math.isfinite(predictor.threshold) and -1.0 <= predictor.threshold <= 1.0):
        raise QdupError(f"threshold {predictor.threshold!r} is not a cosine in [-1, 1]")
    published = manifest_threshold(manifest)
    if published is not None and abs(published - predictor.threshold) > 1e-9:
        raise QdupError(f"model threshold {predictor.threshold} differs from the manifest's {published}")
    small = ([a for a, _ in PROBE_PAIRS], [b for _, b in PROBE_PAIRS])
    large = ([f"{a} {i}" for i in range(300) for a in small[0][:1]], [small[1][0]] * 300)
    for q1, q2 in (small, large):
        sims = predictor.similarity(q1, q2)
        if sims.shape != (len(q1),) or not np.all(np.isfinite(sims)) or np.any(np.abs(sims) > 1.0):
            raise QdupError(f"probe pairs gave {sims.tolist()[:8]}..., not {len(q1)} cosines")


# Why a version is refused: its bytes are not the published ones, its verified files do not load
# (safe_mode=True, or not a qdup export), or its loaded model fails the probe pairs.
REFUSAL_KINDS = ("hash", "load", "probe")
# Kinds the follower tries again (with backoff, up to `probe_attempts` loads) before refusing for good: a probe
# runs the model, which can fail for a passing cause (memory, a runtime fault), where hash and load failures are
# facts of the immutable bytes.
RETRIED_KINDS = ("probe",)


class VersionRefused(QdupError):
    """A version that cannot be served as published (`kind` in REFUSAL_KINDS): its own fault, not the store's."""

    def __init__(self, version: str, kind: str, message: str):
        super().__init__(f"version {version} refused ({kind}): {message}")
        self.version, self.kind, self.message = version, kind, message


def load_served(store: VersionStore, version: str) -> ServedModel:
    """Load a version's exported model and index and verify them.

    Raises VersionRefused when the version itself is at fault; anything else (the store or its
    registry unreachable, a local disk error) is raised as it is: a transient failure, worth retrying.
    """
    try:
        folder = version_dir(store, version)
        manifest = store.manifest(version)
    except TamperedVersionError as exc:
        raise VersionRefused(version, "hash", str(exc)) from exc
    try:
        predictor = load_inference(folder / "model")
        searcher = load_searcher(folder)
    except OSError:
        raise  # reading a verified local copy failed: the disk, not the version
    except Exception as exc:  # the verified bytes do not load: the same on every retry
        raise VersionRefused(version, "load", f"{type(exc).__name__}: {exc}") from exc
    try:
        verify(predictor, manifest)
    except QdupError as exc:
        raise VersionRefused(version, "probe", str(exc)) from exc
    return ServedModel(version, predictor, predictor.threshold, manifest, searcher)


@dataclass(frozen=True)
class FollowerState:
    """What readers see of a follower: the served model with the error, refusals and switches that go with it.

    Never changed: the follower publishes a new state by one assignment, so a reader that takes `state`
    once never sees a new version beside the previous version's error.
    """

    current: ServedModel | None = None
    last_error: dict[str, Any] | None = None
    refused: Mapping[str, dict[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    switches: tuple[dict[str, Any], ...] = ()


class ModelFollower:
    """Holds the served model; a background thread re-resolves the reference and switches on a move.

    The switch is one attribute assignment (atomic for readers): a request takes `current` (or the
    whole `state`) once and keeps that object, so requests in flight finish on the version they
    started with. A version that fails to load or verify is never switched to; the old one keeps
    serving and the failure is logged and kept in `last_error`. A version refused for its own fault
    (VersionRefused) in its bytes (hash, load) is never tried again (versions are immutable) and is
    listed in `refused`; one whose probe failed is tried again after a backoff, up to `probe_attempts`
    loads in all, then refused. Any other failure (store or registry unreachable) is transient: the
    version is tried again, without limit. Backoffs double from `retry_s` up to `max_retry_s`.
    """

    def __init__(
        self,
        store: VersionStore,
        ref: str,
        poll_s: float = 5.0,
        loader: Callable[[VersionStore, str], ServedModel] = load_served,
        retry_s: float | None = None,
        max_retry_s: float = 300.0,
        probe_attempts: int = 3,
    ):
        if probe_attempts < 1:
            raise QdupError(f"probe_attempts must be at least 1, got {probe_attempts}")
        self.store = store
        self.ref = ref
        self.poll_s = poll_s
        self.retry_s = poll_s if retry_s is None else retry_s
        self.max_retry_s = max_retry_s
        self.probe_attempts = probe_attempts
        self._loader = loader
        # Replaced whole, never changed (FollowerState); written only with _check_lock held.
        self._state = FollowerState()
        # Loads that failed, by kind (REFUSAL_KINDS or "transient"): the server's metrics.
        self.failed_loads: Counter[str] = Counter()
        # Versions whose last load failed and will be tried again: (failures so far, monotonic time of the next try).
        self._retry: dict[str, tuple[int, float]] = {}
        # Loads of a version that failed for its own fault (VersionRefused), against probe_attempts.
        self._faults: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    @property
    def state(self) -> FollowerState:
        """The served model, last error, refusals and switches as one consistent snapshot."""
        return self._state

    @property
    def current(self) -> ServedModel | None:
        return self._state.current

    @property
    def last_error(self) -> dict[str, Any] | None:
        return self._state.last_error

    @property
    def refused(self) -> Mapping[str, dict[str, Any]]:
        return self._state.refused

    @property
    def switches(self) -> tuple[dict[str, Any], ...]:
        return self._state.switches

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
            # The version only, not the served object: the switch below collects the previous version's objects.
            current = self._state.current.version if self._state.current else None
            if current == version:
                return False
            if version in self.refused:
                return False
            failures, next_try = self._retry.get(version, (0, 0.0))
            if time.monotonic() < next_try:
                return False
            try:
                served = self._loader(self.store, version)
            except VersionRefused as exc:
                self.failed_loads[exc.kind] += 1
                self._faults[version] += 1
                if exc.kind in RETRIED_KINDS and self._faults[version] < self.probe_attempts:
                    self._retry_later(version, failures, exc.message, exc.kind, attempts_left=self.probe_attempts - self._faults[version])
                    return False
                self._retry.pop(version, None)
                refusal = {"kind": exc.kind, "error": exc.message, "at": _now(), "attempts": self._faults.pop(version)}
                self._record_error(version, exc.message, kind=exc.kind, refused={**self._state.refused, version: refusal})
                return False
            except Exception as exc:  # the store or registry unreachable: try again later
                self.failed_loads["transient"] += 1
                self._retry_later(version, failures, f"{type(exc).__name__}: {exc}", "transient")
                return False
            self._retry.pop(version, None)
            self._faults.pop(version, None)
            self._switch(served)
            return True

    def _retry_later(self, version: str, failures: int, message: str, kind: str, **extra: Any) -> None:
        """Schedule the next load of `version` after a backoff that doubles with each failure, and say so."""
        delay = min(self.retry_s * 2**failures, self.max_retry_s)
        self._retry[version] = (failures + 1, time.monotonic() + delay)
        self._record_error(version, message, kind=kind, retry_in_s=delay, attempts=failures + 1, **extra)

    def _switch(self, served: ServedModel) -> None:
        before = self._state
        entry = {"from": before.current.version if before.current else None, "to": served.version, "at": _now()}
        # The new version, its cleared error and its switch entry in one assignment: readers see all or none.
        self._state = replace(before, current=served, last_error=None, switches=(*before.switches, entry))
        del before  # the previous version's objects must be unreachable from here for the collection below
        # The loaded model, index and caches are hundreds of thousands of long-lived objects: every full
        # collection would scan them all (pauses long enough to set the p99 latency under load).
        # Collected once here, then frozen out of the collector's scans; the previous version's objects are
        # unfrozen first so that they can be collected once nothing serves them.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.info("serving %s (%s) from %s", self.ref, served.version, entry["from"] or "start")

    def _record_error(
        self, version: str | None, message: str, kind: str = "transient", refused: Mapping[str, dict[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        """Publish the failure (with `refused`, the refusals that now include it, in the same step) and log it.

        `kind`: "transient" or one of REFUSAL_KINDS; `retry_in_s` in `extra` when the version will be tried again.
        """
        before = self._state
        serving = before.current.version if before.current else None
        error = {"version": version, "error": message, "kind": kind, "at": _now(), "still_serving": serving, **extra}
        changes: dict[str, Any] = {"last_error": error}
        if refused is not None:
            changes["refused"] = MappingProxyType(dict(refused))
        self._state = replace(before, **changes)
        log.error("not switching %s to %s (%s): %s; still serving %s", self.ref, version, kind, message, serving)

    def start(self) -> None:
        """Start polling in a background thread (which loads first when nothing is loaded yet)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qdup-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._state.current is None:
            self.check()
        while not self._stop.wait(self.poll_s):
            self.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
