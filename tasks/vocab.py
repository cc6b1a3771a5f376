"""Prefect task around `qdup.stages.vocab.build_vocab`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from qdup.config import RetrainConfig
from qdup.stagecache import StageResult, code_fingerprint, params, run_stage
from tasks.common import TASK_OPTIONS, artifact, run_log


def vocab_inputs(splits_key: str, cfg: RetrainConfig) -> dict[str, Any]:
    """What the vocabulary stage's key hashes."""
    return {"splits": splits_key, "vocab": params(cfg.vocab), "code": code_fingerprint("qdup.stages.vocab", "tasks.vocab")}


@task(name="vocabulary", **TASK_OPTIONS)
def vocab_task(splits: StageResult, cfg: RetrainConfig) -> StageResult:
    """Adapt TextVectorization on the train split's questions only; record OOV rates."""
    log = run_log()
    inputs = vocab_inputs(splits.key, cfg)

    def build(out: Path) -> dict:
        # In a child process: this process stays without TensorFlow while training runs (qdup.stages.vocab).
        from qdup.stages.vocab import build_vocab_in_child

        return build_vocab_in_child(splits.path, cfg.vocab, out, log)

    result = run_stage("vocab", inputs, build, log)
    m = result.manifest
    log(f"[vocab] {m['size']:,} tokens; OOV rate val {m['oov_rate']['val']:.2%}, test {m['oov_rate']['test']:.2%}")
    artifact(
        "qdup-vocabulary",
        f"# Vocabulary\n\n| size | OOV val | OOV test | sha256 |\n|---|---|---|---|\n"
        f"| {m['size']:,} | {m['oov_rate']['val']:.2%} | {m['oov_rate']['test']:.2%} | `{m['sha256'][:16]}` |\n",
        "vocabulary fitted on train",
    )
    return result
