"""The `retrain` flow: fetch, validate, drift, splits, vocabulary, [pretrain], [silver], train, evaluate, [rerank], retrieval, export, index,
gate, publish."""

from __future__ import annotations

from prefect import flow

from qdup.config import RetrainConfig
from qdup.registry.store import ArtifactStore, new_version_id
from qdup.runs import new_run_dir, write_run_record
from qdup.runtime import apply_tf_thread_defaults
from qdup.stagecache import StageResult, params, stage_key
from tasks.common import flow_run_info
from tasks.drift import drift_inputs, drift_task
from tasks.evaluate import evaluate_inputs, evaluate_task
from tasks.export import export_inputs, export_task, exports_search_reranker
from tasks.feedback import feedback_task
from tasks.fetch import fetch_task
from tasks.gate import gate_inputs, gate_task
from tasks.index import index_inputs, index_task
from tasks.pretrain import pretrain_inputs, pretrain_task
from tasks.publish import publish_task
from tasks.rerank import check_rerank_data, rerank_inputs, rerank_task
from tasks.retrieval import retrieval_inputs, retrieval_task
from tasks.silver import silver_inputs, silver_task
from tasks.splits import splits_inputs, splits_task
from tasks.train import train_inputs, train_task
from tasks.validate import validate_inputs, validate_task
from tasks.vocab import vocab_inputs, vocab_task


def production_version(config: RetrainConfig) -> str | None:
    """The version `production` names in the configured store now (None: no production yet)."""
    return ArtifactStore(config.publish.store_url, registry_url=config.publish.registry_url).aliases().get("production")


def stage_keys(config: RetrainConfig, dataset_sha256: str, production: str | None = None,
               feedback_sha256: str | None = None) -> dict[str, str]:
    """The key of every stage for a dataset (and feedback snapshot), without running anything (what a run would reuse or build)."""
    keys = {"fetch": dataset_sha256}
    if feedback_sha256 is not None:
        keys["feedback"] = feedback_sha256
    keys["validate"] = stage_key("validate", validate_inputs(dataset_sha256, config))
    keys["drift"] = stage_key("drift", drift_inputs(keys["validate"], production, config))
    keys["splits"] = stage_key("splits", splits_inputs(keys["validate"], config, feedback_sha256))
    keys["vocab"] = stage_key("vocab", vocab_inputs(keys["splits"], config))
    if config.pretrain.enabled:
        keys["pretrain"] = stage_key("pretrain", pretrain_inputs(keys["splits"], keys["vocab"], config))
    if config.train.uses_silver:
        keys["silver"] = stage_key("silver", silver_inputs(keys["splits"], config))
    keys["train"] = stage_key("train", train_inputs(keys["splits"], keys["vocab"], config, keys.get("pretrain"), keys.get("silver")))
    keys["evaluate"] = stage_key("evaluate", evaluate_inputs(keys["splits"], keys["vocab"], keys["train"], config))
    if config.rerank.enabled:
        keys["rerank"] = stage_key("rerank", rerank_inputs(keys["splits"], keys["vocab"], keys["train"], keys["evaluate"], config))
    rerank = keys.get("rerank")
    keys["retrieval"] = stage_key("retrieval", retrieval_inputs(keys["splits"], keys["vocab"], keys["train"], config, rerank))
    keys["export"] = stage_key("export", export_inputs(keys["vocab"], keys["train"], keys["evaluate"], config, rerank,
                                                       keys["retrieval"] if exports_search_reranker(config) else None))
    keys["index"] = stage_key("index", index_inputs(keys["validate"], keys["export"], keys["retrieval"], config))
    keys["gate"] = stage_key("gate", gate_inputs(keys["splits"], keys["evaluate"], keys["retrieval"], keys["export"], production,
                                                 config))
    return keys


@flow(name="qdup-retrain", log_prints=True, validate_parameters=True)
def retrain(config: RetrainConfig = RetrainConfig()) -> dict[str, str]:
    """Run the pipeline up to `config.until`; returns each finished stage's output folder."""
    # Before the first TensorFlow op of a worker's process; a no-op where TF already started.
    apply_tf_thread_defaults()
    run_dir = new_run_dir()
    done: dict[str, StageResult] = {}
    published: dict[str, str] = {}
    try:
        done["fetch"] = fetch_task(config)
        if config.runs_through("validate"):
            done["validate"] = validate_task(done["fetch"], config, run_dir)
        if config.runs_through("drift"):
            # Resolved once: the drift check and its stage key name the same version even if production moves meanwhile.
            done["drift"] = drift_task(done["validate"], config, production_version(config), run_dir)
        if config.runs_through("splits") and config.feedback.enabled:
            done["feedback"] = feedback_task(config, run_dir)
        if config.runs_through("splits"):
            done["splits"] = splits_task(done["validate"], config, run_dir, done.get("feedback"))
            check_rerank_data(done["splits"], config)
        if config.runs_through("vocab"):
            done["vocab"] = vocab_task(done["splits"], config)
        if config.runs_through("pretrain") and config.pretrain.enabled:
            done["pretrain"] = pretrain_task(done["splits"], done["vocab"], config)
        if config.runs_through("silver") and config.train.uses_silver:
            done["silver"] = silver_task(done["splits"], config, run_dir)
        if config.runs_through("train"):
            done["train"] = train_task(done["splits"], done["vocab"], config, done.get("pretrain"), done.get("silver"))
        if config.runs_through("evaluate"):
            done["evaluate"] = evaluate_task(done["splits"], done["vocab"], done["train"], config)
        if config.runs_through("rerank") and config.rerank.enabled:
            done["rerank"] = rerank_task(done["splits"], done["vocab"], done["train"], done["evaluate"], config)
        if config.runs_through("retrieval"):
            done["retrieval"] = retrieval_task(done["splits"], done["vocab"], done["train"], config, done.get("rerank"))
        if config.runs_through("export"):
            done["export"] = export_task(done["vocab"], done["train"], done["evaluate"], config, done.get("rerank"),
                                         done.get("retrieval"))
        if config.runs_through("index"):
            done["index"] = index_task(done["fetch"], done["validate"], done["export"], done["retrieval"], config)
        if config.runs_through("gate"):
            # Judged against the production of now; publish promotes only if production is still this one.
            done["gate"] = gate_task(done["splits"], done["evaluate"], done["retrieval"], done["export"], config,
                                     production_version(config))
        if config.runs_through("publish"):
            # The id is fixed before the task so that a retried publish cannot publish twice.
            published = publish_task(done, config, new_version_id())
    except BaseException as error:
        # A failed run leaves its record too: status, the error, the stages done and their folders.
        write_run_record(run_dir, params(config), done, published, prefect=flow_run_info(), error=error)
        raise
    record = write_run_record(run_dir, params(config), done, published, prefect=flow_run_info())
    outputs = {"run_record": str(record), **{name: str(r.path) for name, r in done.items()}}
    if published:
        outputs["version"] = published["version"]
        outputs["published"] = str(published["published"]).lower()
        outputs["promoted"] = str(published["promoted"]).lower()
    return outputs


if __name__ == "__main__":
    retrain()
