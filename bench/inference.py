"""Encoder runtimes on real-length text: python -m bench.inference --store URL [--out bench/results/inference].

Measures one published version's encoder (the store's `production`, or --model) on questions of the shared
real pairs (../shared/data, read at run time; generated questions when absent, flagged in the report) under:
  keras        the Keras encoder in one traced tf.function (the reference);
  xla          the same function with jit_compile=True (one compilation per input shape);
  tf2onnx      the encoder converted by tf2onnx, run by ONNX Runtime;
  litert       the encoder converted to LiteRT/TFLite built-in ops, run by ai-edge-litert;
  onnx-lstm    qdup's fast form (qdup.model.onnx_export: ONNX's native LSTM op) by ONNX Runtime — what serving runs.
For each: questions/s over all texts in batches of --batch, one-question latency (p50 over --single calls), the
largest absolute difference from the Keras encodings, or why it could not run. All runtimes get the same
numpy inputs (qdup.model.features), so the figures compare the runtimes alone. Then the whole in-process
paths: Predictor.similarity and Predictor.decide (with the reranker) pairs/s on random real pairs.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.results import Run, page
from bench.harness.stats import call_latencies, latency_summary
from bench.shared_data import distinct_questions


def shared_questions(n: int, seed: int) -> tuple[list[str], bool]:
    """`n` distinct real questions (shuffled with `seed`), or generated ones when the shared data is absent."""
    found = distinct_questions(seed, generated_rows=max(n, 1000))
    questions = found["questions"]
    random.Random(seed).shuffle(questions)
    return questions[:n], not found["generated"]


def _batches(featurizer, texts: list[str], batch: int, masks: bool) -> list[tuple[np.ndarray, ...]]:
    from qdup.model.features import bucket_width

    words = [featurizer.words(t) for t in texts]
    lengths = np.array([max(1, len(w)) for w in words])
    widths = np.array([bucket_width(int(n), featurizer.max_length) if masks else featurizer.max_length for n in lengths])
    order = np.lexsort((lengths, widths))
    out = []
    for width in np.unique(widths):
        members = order[widths[order] == width]
        for start in range(0, len(members), batch):
            idx = members[start : start + batch]
            ids, sub, lens = featurizer.batch([words[i] for i in idx], int(width))
            out.append((idx, ids, sub, lens if masks else np.full(len(idx), width, np.int32)))
    return out


def _measure(name: str, run, batches, texts: list[str], dims: int, reference: np.ndarray | None, single: int) -> dict[str, Any]:
    out = np.zeros((len(texts), dims), dtype=np.float32)
    t0 = time.perf_counter()
    for idx, ids, sub, lens in batches:  # warm: traces, compilations, allocations
        out[idx] = run(ids, sub, lens)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for idx, ids, sub, lens in batches:
        out[idx] = run(ids, sub, lens)
    seconds = time.perf_counter() - t0
    # One question at a time, through the width bucket most questions fall in.
    idx, ids, sub, lens = max(batches, key=lambda b: len(b[0]))
    one = (ids[:1], None if sub is None else sub[:1], lens[:1])
    lat = call_latencies(lambda args: run(*args), [one] * (single + 1), warmup=1)
    result = {"questions_per_s": round(len(texts) / seconds, 1), "first_pass_s": round(warm_s, 2),
              "one_question": latency_summary(lat)}
    if reference is not None:
        result["max_abs_diff_vs_keras"] = float(np.abs(out - reference).max())
    print(f"[{name}] {result['questions_per_s']:,.0f} questions/s, one question p50 {result['one_question']['p50_ms']:.2f} ms"
          + (f", max |diff| vs Keras {result['max_abs_diff_vs_keras']:.1e}" if reference is not None else ""), flush=True)
    return result | {"encodings": out}


def runtimes(model_dir: Path, texts: list[str], batch: int, single: int, threads: int) -> dict[str, Any]:
    """Every runtime on the same inputs; `encodings` of each are compared with the Keras ones."""
    import onnxruntime as ort
    import tensorflow as tf

    from qdup.model.exported import read_export_meta
    from qdup.model.fast import FastEncoder, featurizer_for, session_options
    from qdup.model.network import encoder_masks_padding, load_saved_model
    from qdup.model.onnx_export import encoder_to_onnx
    from qdup.model.vocabulary_file import read_vocabulary

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    meta = read_export_meta(model_dir)
    encoder = load_saved_model(model_dir / "encoder.keras")
    featurizer = featurizer_for(read_vocabulary(model_dir / "vocabulary.txt"), int(meta["max_length"]), meta.get("model") or {})
    masks = encoder_masks_padding(encoder)
    batches = _batches(featurizer, texts, batch, masks)
    dims = int(encoder.output_shape[-1])
    subwords = featurizer.subwords is not None
    spec = [tf.TensorSpec((None, None), tf.int32)] + ([tf.TensorSpec((None, None, featurizer.subwords.max_per_word), tf.int32)]
                                                      if subwords else [])

    def keras_inputs(ids, sub):
        return [ids, sub] if subwords else ids

    graph = tf.function(lambda *x: encoder(keras_inputs(*x), training=False), input_signature=spec)
    xla = tf.function(lambda *x: encoder(keras_inputs(*x), training=False), jit_compile=True)

    def tf_run(fn):
        return lambda ids, sub, lens: fn(*([ids, sub] if subwords else [ids])).numpy()

    results: dict[str, Any] = {}
    ref = _measure("keras", tf_run(graph), batches, texts, dims, None, single)
    results["keras"] = ref
    reference = ref["encodings"]
    results["xla"] = _measure("xla", tf_run(xla), batches, texts, dims, reference, single)

    try:
        import tf2onnx

        t0 = time.perf_counter()
        proto, _ = tf2onnx.convert.from_function(tf.function(lambda *x: encoder(keras_inputs(*x), training=False)),
                                                 input_signature=spec, opset=17)
        convert_s = time.perf_counter() - t0
        sess = ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        ops = sorted({n.op_type for n in proto.graph.node})
        results["tf2onnx"] = _measure("tf2onnx", lambda ids, sub, lens: sess.run(None, dict(zip(names, [ids, sub][: len(names)],
                                                                                                    strict=True)))[0],
                                      batches, texts, dims, reference, single) | {
            "convert_s": round(convert_s, 1), "lstm_as": "Loop" if "Loop" in ops else ("LSTM" if "LSTM" in ops else "other")}
    except Exception as exc:  # the report says why a runtime could not run; the others are still measured
        results["tf2onnx"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        print(f"[tf2onnx] failed: {results['tf2onnx']['error']}")

    try:
        from ai_edge_litert.interpreter import Interpreter

        conv = tf.lite.TFLiteConverter.from_concrete_functions([graph.get_concrete_function()], encoder)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        interpreter = Interpreter(model_content=conv.convert(), num_threads=threads)
        details = interpreter.get_input_details()
        output = interpreter.get_output_details()[0]["index"]

        def litert(ids, sub, lens):
            feeds = [ids, sub][: len(details)]
            for d, x in zip(details, sorted(feeds, key=lambda a: a.ndim), strict=True):
                interpreter.resize_tensor_input(d["index"], x.shape)
            interpreter.allocate_tensors()
            for d, x in zip(details, sorted(feeds, key=lambda a: a.ndim), strict=True):
                interpreter.set_tensor(d["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(output)

        results["litert"] = _measure("litert", litert, batches, texts, dims, reference, single)
    except Exception as exc:  # as above
        results["litert"] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
        print(f"[litert] failed: {results['litert']['error']}")

    fast = FastEncoder(encoder_to_onnx(encoder), featurizer, masks, threads=threads)
    results["onnx-lstm"] = _measure("onnx-lstm", fast._run, batches, texts, dims, reference, single)
    for r in results.values():
        r.pop("encodings", None)
    return results


def in_process(model_dir: Path, texts: list[str], pairs: int, seed: int) -> dict[str, Any]:
    """Predictor.similarity and Predictor.decide on `pairs` random real pairs, and the featurizer's share."""
    from qdup.serving.predictor import load_inference

    predictor = load_inference(model_dir)
    rng = random.Random(seed)
    q1 = [rng.choice(texts) for _ in range(pairs)]
    q2 = [rng.choice(texts) for _ in range(pairs)]
    predictor.similarity(q1[:512], q2[:512])
    out: dict[str, Any] = {"runtime": predictor.runtime, "pairs": pairs,
                           "distinct_questions": len(set(q1) | set(q2))}
    t0 = time.perf_counter()
    predictor.similarity(q1, q2)
    out["similarity_pairs_per_s"] = round(pairs / (time.perf_counter() - t0), 1)
    if predictor.reranker is not None:
        t0 = time.perf_counter()
        predictor.decide(q1, q2)
        out["decide_pairs_per_s"] = round(pairs / (time.perf_counter() - t0), 1)
    print(f"[in-process] {json.dumps(out)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="store URL holding the version to measure")
    parser.add_argument("--model", default="production", help="alias or version id (default production)")
    parser.add_argument("--out", default="bench/results/inference")
    parser.add_argument("--questions", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--single", type=int, default=300, help="one-question calls timed per runtime")
    parser.add_argument("--pairs", type=int, default=20000, help="pairs for the in-process Predictor figures")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from qdup.registry.store import ArtifactStore
    from qdup.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    store = ArtifactStore(args.store)
    version = store.resolve(args.model)
    model_dir = store.open_version(version) / "model"
    run = Run("bench.inference", argv)
    texts, real = shared_questions(args.questions, args.seed)
    words = [len(t.split()) for t in texts]
    report: dict[str, Any] = {
        "version": version, "questions": len(texts), "real_text": real,
        "words_per_question": {"mean": round(float(np.mean(words)), 1), "p90": float(np.percentile(words, 90))},
        "batch": args.batch, "threads": args.threads,
    }
    report["runtimes"] = runtimes(model_dir, texts, args.batch, args.single, args.threads)
    report["in_process"] = in_process(model_dir, texts, args.pairs, args.seed)
    run.save(Path(args.out), "inference.json", report, "inference.md", render)
    return 0


def render(report: dict[str, Any]) -> str:
    text = "real questions (shared real pairs)" if report["real_text"] else "GENERATED questions (no shared data)"
    lines = [
        f"Version {report['version']}, {report['questions']:,} {text} ({report['words_per_question']['mean']} words on "
        f"average), batches of {report['batch']}, {report['threads']} threads.", "",
        "| runtime | questions/s | one question p50 ms | max abs diff vs Keras | note |", "|---|---:|---:|---:|---|",
    ]
    for name, r in report["runtimes"].items():
        if "error" in r:
            lines.append(f"| {name} | — | — | — | could not run: {r['error']} |")
            continue
        diff = r.get("max_abs_diff_vs_keras")
        note = {"keras": "reference", "onnx-lstm": "served (encoder.onnx)"}.get(name, "")
        if name == "tf2onnx":
            note = f"LSTM converted as {r.get('lstm_as')}; conversion {r.get('convert_s')} s"
        if name == "xla":
            note = f"first pass (compiling each shape) {r['first_pass_s']} s"
        lines.append(f"| {name} | {r['questions_per_s']:,.0f} | {r['one_question']['p50_ms']:.2f} | "
                     f"{'—' if diff is None else f'{diff:.1e}'} | {note} |")
    ip = report["in_process"]
    lines += ["", f"In process ({ip['runtime']}), {ip['pairs']:,} random real pairs ({ip['distinct_questions']:,} distinct questions): "
              f"`Predictor.similarity` {ip['similarity_pairs_per_s']:,.0f} pairs/s"
              + (f", `Predictor.decide` (with the reranker) {ip['decide_pairs_per_s']:,.0f} pairs/s" if "decide_pairs_per_s" in ip else "")
              + "."]
    return page("Encoder runtimes", report, lines)


if __name__ == "__main__":
    raise SystemExit(main())
