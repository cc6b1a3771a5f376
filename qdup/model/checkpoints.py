"""Per-epoch checkpoints of a training run: model and optimizer state, early-stopping state, dropout reseeding.

`state.json` in the checkpoint folder is the commit point of an epoch: until it names a new checkpoint, the
previous one stays valid, so a run killed at any moment resumes from its last committed epoch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from qdup.errors import QdupError
from qdup.fileio import atomic_write_json, read_json

EpochHook = Callable[[int, int, dict[str, float]], None]
STATE_VERSION = 1
STATE_FILE = "state.json"


def fresh_state(fingerprint: str) -> dict[str, Any]:
    """The state of a run that has completed no epoch; `fingerprint` names the run (data, configuration, seed)."""
    return {
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "epoch": 0,
        "checkpoint": None,
        "best_epoch": None,
        "best_val_loss": None,
        "best_checkpoint": None,
        "wait": 0,
        "lr_wait": 0,
        "stopped_early": False,
        "history": [],
    }


def read_state(ckpt_dir: Path, fingerprint: str, work_dir: Path) -> dict[str, Any] | None:
    """The committed state in `ckpt_dir` (None: no epoch committed yet); QdupError when it is another run's."""
    path = ckpt_dir / STATE_FILE
    if not path.is_file():
        return None
    st = read_json(path)
    if st.get("version") != STATE_VERSION or st.get("fingerprint") != fingerprint:
        raise QdupError(
            f"{ckpt_dir} holds checkpoints of a different training run (other data, vocabulary, "
            f"configuration or seed); delete {work_dir} to train from scratch"
        )
    return st


def reseed_random_layers(model: keras.Model, seed: int, epoch: int) -> int:
    """Set the random state of every layer of `model` (dropout masks) from (seed, epoch) alone.

    Keras does not restore these states from a checkpoint, so without this a resumed run would
    draw other dropout masks than an uninterrupted one. Returns how many states were set.
    """
    states = [v for v in model.variables if v.path.rsplit("/", 1)[-1] == "seed_generator_state"]
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    for v in states:
        v.assign(keras.ops.convert_to_tensor([int(rng.integers(0, 2**30)), 0], dtype=v.dtype))
    return len(states)


def save_keras_atomic(model: keras.Model, path: Path) -> None:
    # Keras insists on the ".keras" suffix, so the temporary name keeps it.
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> keras.Model:
    if not path.is_file():
        raise QdupError(f"checkpoint {path} named in {path.parent / STATE_FILE} is missing; delete {path.parent} to start over")
    return keras.saving.load_model(path, safe_mode=True)


class Checkpointer(keras.callbacks.Callback):
    """Per epoch: early-stopping bookkeeping, a checkpoint (model + optimizer + state), log, hook."""

    def __init__(
        self,
        ckpt_dir: Path,
        state: dict[str, Any],
        total: int,
        patience: int,
        log: Callable[[str], None],
        hook: EpochHook | None,
        lr_decay: tuple[float, int] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.seed = seed
        self.ckpt_dir = ckpt_dir
        self.state = state
        self.total = total
        self.patience = patience
        self.lr_decay = lr_decay
        self.log = log
        self.hook = hook
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        reseed_random_layers(self.model, self.seed, epoch + 1)
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        n = epoch + 1
        logs = logs or {}
        seconds = time.perf_counter() - self._t0
        loss, val_loss = float(logs["loss"]), float(logs["val_loss"])
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            raise QdupError(f"training diverged at epoch {n}: loss={loss} val_loss={val_loss}; lower the learning rate")
        st = self.state
        if st["best_val_loss"] is None or val_loss < st["best_val_loss"]:
            st.update(best_val_loss=val_loss, best_epoch=n, wait=0, lr_wait=0)
        else:
            st["wait"] += 1
            st["lr_wait"] = st.get("lr_wait", 0) + 1
        stop = st["wait"] >= self.patience and n < self.total
        if self.lr_decay is not None and not stop and st["lr_wait"] >= self.lr_decay[1]:
            # Reduce on plateau; the new rate is saved with this epoch's checkpoint (optimizer state).
            lr = self.model.optimizer.learning_rate
            old = float(keras.ops.convert_to_numpy(lr))
            lr.assign(old * self.lr_decay[0])
            st["lr_wait"] = 0
            self.log(f"val_loss has not improved for {self.lr_decay[1]} epochs: learning rate {old:.3g} -> {old * self.lr_decay[0]:.3g}")
        name = f"epoch-{n:04d}.keras"
        save_keras_atomic(self.model, self.ckpt_dir / name)
        entry = {"epoch": n, "loss": loss, "val_loss": val_loss, "seconds": round(seconds, 3)}
        if self.lr_decay is not None:
            entry["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        st["history"].append(entry)
        st.update(epoch=n, checkpoint=name, stopped_early=stop)
        if st["best_epoch"] == n:
            st["best_checkpoint"] = name
        # state.json is the commit point: until it names the new checkpoint, the old one stays valid.
        atomic_write_json(self.ckpt_dir / STATE_FILE, st)
        keep = {st["checkpoint"], st["best_checkpoint"]}
        for old in self.ckpt_dir.glob("epoch-*.keras"):
            if old.name not in keep:
                old.unlink()
        self.log(f"epoch {n}/{self.total} loss={loss:.4f} val_loss={val_loss:.4f} ({seconds:.1f}s)")
        if stop:
            self.model.stop_training = True
            self.log(
                f"early stopping after epoch {n}: val_loss has not improved for {st['wait']} epochs; "
                f"best epoch {st['best_epoch']}"
            )
        if self.hook is not None:
            self.hook(n, self.total, {"loss": loss, "val_loss": val_loss, "seconds": seconds})
