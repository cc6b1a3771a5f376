"""The steps of `python -m bench.search`, each run in its own process (`python -m bench.search --step NAME`): the corpus,
the index build, query latency and throughput, hybrid latency, mining and its recall, the lexical index on the real
pairs, and the retrieval evaluation's memory. Each returns its figures; the harness adds the process's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness.procs import cpu_seconds, peak_rss_bytes
from bench.harness.stats import interleaved_latencies, latency_summary
from bench.shared_data import REAL_PAIRS, real_pair_codes

SEED = 20260101
SMALL_INDEX = 14_000  # the real sample's index size, for the hybrid latency target at that size
RETRIEVAL_CORPUS = 77_000  # distinct questions the retrieval stage indexed on the 123k-row real data set


def _encoder(questions: list[str], seed: int):
    """A default-architecture encoder with seeded random weights and a vocabulary fitted on `questions`."""
    import keras

    from qdup.config import ModelConfig, VocabConfig
    from qdup.model.network import build_encoder
    from qdup.model.vocab import fit_vectorizer

    keras.utils.set_random_seed(seed)
    vectorizer = fit_vectorizer(questions, VocabConfig())
    return build_encoder(vectorizer.vocabulary_size(), ModelConfig()), vectorizer


def _questions(work: Path) -> tuple[list[int], list[str]]:
    import pyarrow.parquet as pq

    t = pq.read_table(work / "questions.parquet")
    return t.column("id").to_pylist(), t.column("question").to_pylist()


def step_corpus(work: Path, n: int, threads: int) -> dict[str, Any]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qdup.data.demo import write_demo_tsv

    rows = int(n * 1.1) + 1000
    while True:
        tsv = work / "demo.tsv"
        write_demo_tsv(tsv, rows=rows, seed=SEED)
        df = pd.read_csv(tsv, sep="\t", keep_default_na=False)
        distinct = pd.unique(pd.concat([df.question1, df.question2]).astype(str))
        distinct = [q for q in distinct if q.strip()]
        if len(distinct) >= n + 20_000:
            break
        rows = int(rows * 1.3)
    # The first n are the corpus; later ones, never indexed, are the held-out queries.
    pq.write_table(pa.table({"id": list(range(n)), "question": distinct[:n]}), work / "questions.parquet")
    pq.write_table(pa.table({"question": distinct[n : n + 20_000]}), work / "queries.parquet")
    return {"demo_rows": rows, "distinct_questions": len(distinct), "corpus": n}


def step_build(work: Path, n: int, threads: int) -> dict[str, Any]:
    from qdup.config import SearchConfig
    from qdup.model.encode import encode
    from qdup.search.index import build_index, recall_against_exact, sample_queries

    ids, texts = _questions(work)
    t0 = time.perf_counter()
    encoder, vectorizer = _encoder(texts, SEED)
    t1, c1 = time.perf_counter(), cpu_seconds()
    vectors = encode(encoder, vectorizer, texts, max_length=64)
    t2, c2 = time.perf_counter(), cpu_seconds()
    cfg = SearchConfig(threads=threads)
    index = build_index(ids, texts, vectors, model_version="bench-random", corpus={"demo_seed": SEED}, ann="auto", seed=SEED, cfg=cfg,
                        lexical=False)
    t2b, c2b = time.perf_counter(), cpu_seconds()
    from qdup.search.bm25 import build_lexical

    index.lexical = build_lexical(index.texts)  # what build_index(lexical=True) does, timed apart
    t3, c3 = time.perf_counter(), cpu_seconds()
    recall = recall_against_exact(index, sample_queries(index, 1000, SEED), 10)
    t4 = time.perf_counter()
    index.save(work / "index")
    t5 = time.perf_counter()
    return {
        "vocab_and_model_s": t1 - t0,
        "encode_s": t2 - t1,
        "encode_qps": len(texts) / (t2 - t1),
        "encode_cpu_s": c2 - c1,
        "index_cpu_s": c3 - c2,
        "index_s": t3 - t2,
        "ann_s": t2b - t2,
        "lexical_s": t3 - t2b,
        "lexical_cpu_s": c3 - c2b,
        "lexical": index.lexical.describe(),
        "build_s": t3 - t1,
        "recall_measure_s": t4 - t3,
        "save_s": t5 - t4,
        "backend": index.backend,
        "recall_at_10": recall["recall"],
        "settings": cfg.model_dump(),
    }


def step_query(work: Path, n: int, threads: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    from qdup.model.onnx_export import fast_encoder_from_keras
    from qdup.search.encoder import QueryEncoder
    from qdup.search.index import load_index

    t0 = time.perf_counter()
    index = load_index(work / "index", expected_model_version="bench-random")
    load_s = time.perf_counter() - t0
    _, texts = _questions(work)
    encoder, vectorizer = _encoder(texts, SEED)
    del texts
    queries = pq.read_table(work / "queries.parquet").column("question").to_pylist()
    # The query path of `qdup search "text"`: QueryEncoder.encode_one, then QuestionIndex.search.
    qe = QueryEncoder(fast_encoder_from_keras(encoder, vectorizer, 64), 64, 0.5)
    for q in queries[:50]:  # warm: trace the graph function for the shapes single queries use
        index.search(qe.encode_one(q), 10)
    encode_lat, search_lat, total_lat, total_cpu = [], [], [], []
    for q in queries[50:1050]:
        a, ca = time.perf_counter(), time.process_time()
        vec = qe.encode_one(q)
        b = time.perf_counter()
        index.search(vec, 10)
        c, cc = time.perf_counter(), time.process_time()
        encode_lat.append(b - a)
        search_lat.append(c - b)
        total_lat.append(c - a)
        total_cpu.append(cc - ca)
    batch = queries[:20_000]
    a = time.perf_counter()
    vecs = qe.encode(batch)
    b, cb = time.perf_counter(), cpu_seconds()
    for start in range(0, len(vecs), 1000):
        index.search(vecs[start : start + 1000], 10)
    c, cc = time.perf_counter(), cpu_seconds()
    sample = np.asarray(vecs[:2000])
    return {
        "load_s": load_s,
        "single_total": latency_summary(total_lat),
        "single_encode": latency_summary(encode_lat),
        "single_search": latency_summary(search_lat),
        "single_total_cpu": latency_summary(total_cpu),
        "batch_search_cpu_s": cc - cb,
        "batch_queries": len(batch),
        "batch_encode_qps": len(batch) / (b - a),
        "batch_search_qps": len(batch) / (c - b),
        "batch_total_qps": len(batch) / (c - a),
        "held_out_recall_at_10": _recall(index, sample),
    }


def _interleaved(searcher, queries: list[str], methods: tuple[str, ...], warmup: int = 30) -> dict[str, dict[str, float]]:
    """One query's latency through `searcher.search` per method, the methods interleaved query by query."""
    calls = {m: (lambda q, m=m: searcher.search([q], 10, m)) for m in methods}
    return {m: latency_summary(t) for m, t in interleaved_latencies(calls, queries[: warmup + 300], warmup).items()}


def _hybrid_against_dense(searcher, queries: list[str], prefix: str, form: str) -> dict[str, Any]:
    """The hybrid (its form set in the index's defaults), dense and lexical latencies, interleaved, and hybrid / dense."""
    lat = _interleaved(searcher, queries, ("hybrid", "dense", "lexical"))
    return {f"{prefix}hybrid_{form}": lat["hybrid"], f"{prefix}dense_{form}_run": lat["dense"],
            f"{prefix}lexical_{form}_run": lat["lexical"],
            f"{prefix}hybrid_{form}_over_dense": lat["hybrid"]["p50_ms"] / lat["dense"]["p50_ms"]}


def step_hybrid(work: Path, n: int, threads: int) -> dict[str, Any]:
    """One query through VersionSearcher.search (encode, dense, lexical, fusion, answer), as /v1/search runs it, on the
    full index and on its first 14,000 questions; dense and lexical alone beside it."""
    import pyarrow.parquet as pq

    from qdup.model.onnx_export import fast_encoder_from_keras
    from qdup.search.encoder import QueryEncoder
    from qdup.search.index import build_index, load_index
    from qdup.search.service import VersionSearcher

    t0 = time.perf_counter()
    index = load_index(work / "index", expected_model_version="bench-random")
    load_s = time.perf_counter() - t0
    encoder, vectorizer = _encoder(index.texts, SEED)
    qe = QueryEncoder(fast_encoder_from_keras(encoder, vectorizer, 64), 64, 0.5)
    queries = pq.read_table(work / "queries.parquet").column("question").to_pylist()[:400]
    out: dict[str, Any] = {"load_s": load_s, "questions": len(index)}
    m = min(SMALL_INDEX, len(index))
    small = build_index(index.ids[:m], index.texts[:m], index.embeddings[:m], model_version="bench-random", corpus={},
                        ann="auto", seed=SEED, cfg=index.cfg)
    for name, idx in (("full", index), ("small", small)):
        for form in ("rrf", "weighted"):
            idx.search_defaults = {"method": "hybrid", "hybrid": {"method": form, "weight": 0.5 if form == "weighted" else None},
                                   "rrf_k": 60}
            out.update(_hybrid_against_dense(VersionSearcher(idx, qe), queries, f"{name}_", form))
        out[f"{name}_dense"], out[f"{name}_lexical"] = out[f"{name}_dense_rrf_run"], out[f"{name}_lexical_rrf_run"]
        out[f"{name}_questions"] = len(idx)
    return out


def step_retrieval_memory(work: Path, n: int, threads: int) -> dict[str, Any]:
    """Peak memory of the retrieval evaluation (the retrieval stage's work after encoding) on a corpus of 77,000 distinct
    generated questions: split, dense exact rankings, BM25 index, hybrid grid; encoder with seeded random weights."""
    import pandas as pd

    from qdup.config import SearchConfig
    from qdup.data.demo import write_demo_tsv
    from qdup.model.encode import encode
    from qdup.search.lexical import evaluate_retrieval
    from qdup.search.retrieval import retrieval_split

    tsv = work / "retrieval.tsv"
    write_demo_tsv(tsv, rows=123_000, seed=SEED)
    df = pd.read_csv(tsv, sep="\t", keep_default_na=False)
    seen: set[str] = set()
    end = len(df)
    for row, (a, b) in enumerate(zip(df.question1, df.question2, strict=True)):
        seen.update((a, b))
        if len(seen) >= RETRIEVAL_CORPUS:
            end = row + 1
            break
    pairs = df.iloc[:end][["question1", "question2", "is_duplicate"]]
    split = retrieval_split(pairs, seed=SEED)
    encoder, vectorizer = _encoder(split.corpus, SEED)
    t0, c0 = time.perf_counter(), cpu_seconds()
    embeddings = encode(encoder, vectorizer, split.corpus, max_length=64)
    t1, c1 = time.perf_counter(), cpu_seconds()
    rss_before = peak_rss_bytes()
    result = evaluate_retrieval(split, embeddings, cfg=SearchConfig())
    t2, c2 = time.perf_counter(), cpu_seconds()
    return {"pairs": len(pairs), "corpus": len(split.corpus), "val_queries": len(split.val), "test_queries": len(split.test),
            "encode_s": t1 - t0, "encode_cpu_s": c1 - c0, "evaluate_s": t2 - t1, "evaluate_cpu_s": c2 - c1,
            "peak_rss_before_evaluation_bytes": rss_before, "hybrid": result["hybrid"]["method"],
            "lexical_index": result["lexical_index"]}


def _recall(index, sample) -> float:
    from qdup.search.index import recall_against_exact

    return recall_against_exact(index, sample, 10)["recall"]


def step_mine(work: Path, n: int, threads: int) -> dict[str, Any]:
    from qdup.search.index import load_index
    from qdup.search.mine import mine

    index = load_index(work / "index", expected_model_version="bench-random")
    t0, c0 = time.perf_counter(), cpu_seconds()
    table = mine(index, k=10, out=work / "mined.parquet")
    s = time.perf_counter() - t0
    return {"mine_s": s, "mine_cpu_s": cpu_seconds() - c0, "pairs": table.num_rows, "questions": len(index), "backend": index.backend}


def step_mine_recall(work: Path, n: int, threads: int) -> dict[str, Any]:
    import numpy as np

    from qdup.config import SearchConfig
    from qdup.search.index import build_index, load_index
    from qdup.search.mine import mine

    full = load_index(work / "index", expected_model_version="bench-random")
    m = min(50_000, len(full))
    cfg = full.cfg
    args = (full.ids[:m], full.texts[:m], full.embeddings[:m])
    approx = build_index(*args, model_version="bench-random", corpus={}, ann="ivf", seed=SEED, cfg=cfg)
    exact = build_index(*args, model_version="bench-random", corpus={}, ann="exact", seed=SEED, cfg=SearchConfig(threads=threads))
    t0 = time.perf_counter()
    got = mine(approx, k=10)
    t1 = time.perf_counter()
    want = mine(exact, k=10)
    t2 = time.perf_counter()

    def keys(t):
        return set(zip(t.column("id1").to_pylist(), t.column("id2").to_pylist(), strict=True))

    g, w = keys(got), keys(want)
    return {
        "questions": m,
        "approx_pairs": len(g),
        "exact_pairs": len(w),
        "recall": len(g & w) / len(w),
        "approx_mine_s": t1 - t0,
        "exact_mine_s": t2 - t1,
        "approx_similarity_mean": float(np.mean(got.column("similarity").to_numpy())),
        "exact_similarity_mean": float(np.mean(want.column("similarity").to_numpy())),
    }


def step_real_lexical(work: Path, n: int, threads: int) -> dict[str, Any]:
    import numpy as np

    from qdup.search.bm25 import build_lexical
    from qdup.search.retrieval import ranking_metrics

    if not REAL_PAIRS.is_file():
        return {"skipped": f"{REAL_PAIRS} not found"}
    corpus, q1, q2 = real_pair_codes()
    t0 = time.perf_counter()
    lex = build_lexical(corpus)  # the lexical index search serves (BM25)
    t1 = time.perf_counter()
    ranked, _ = lex.search_positions(q1, 100)
    t2 = time.perf_counter()
    relevant = [np.array([b]) for b in q2]
    m = ranking_metrics(ranked, relevant)
    # Side by side: the exact top k (every posting read), on the same queries.
    from bench.lexical import bm25_exact

    t3 = time.perf_counter()
    exact = bm25_exact(corpus)
    t4 = time.perf_counter()
    ranked_exact, _ = exact.search_positions(q1, 100)
    t5 = time.perf_counter()
    return {
        "pairs": len(q1),
        "corpus": len(corpus),
        "fit_s": t1 - t0,
        "search_s": t2 - t1,
        "metrics": m,
        "exact": {"fit_s": t4 - t3, "search_s": t5 - t4, "metrics": ranking_metrics(ranked_exact, relevant),
                  "lexical_index": "the same BM25 index, every posting read (exact top k)"},
        "lexical_index": f"{lex.kind}, top k by {lex.describe()['top_k']}",
        "task": "query = question1, relevant = its question2 only, corpus = every distinct question of the file",
    }


def step_real_vocab(work: Path, n: int, threads: int) -> dict[str, Any]:
    """Hybrid against dense, and the served lexical top k against the exact one, at full size on a corpus with a real
    vocabulary: every distinct real question of ../shared/data, filled up to `n` with the generated corpus's questions
    (whose vocabulary is the demo generator's two thousand words, so that every word of theirs is common), shuffled.
    Queries are real question1s, relevant = their question2. The generated index's vectors stand in for this corpus's
    (a random-weights encoder: dense results mean nothing here, dense cost is the same whatever the text)."""
    import numpy as np
    import pandas as pd

    from bench.lexical import bm25_exact
    from bench.shared_data import SAMPLE
    from qdup.model.onnx_export import fast_encoder_from_keras
    from qdup.search.bm25 import build_lexical
    from qdup.search.encoder import QueryEncoder
    from qdup.search.index import load_index
    from qdup.search.retrieval import ranking_metrics
    from qdup.search.service import VersionSearcher

    if not REAL_PAIRS.is_file():
        return {"skipped": f"{REAL_PAIRS} not found"}
    pairs = pd.read_csv(REAL_PAIRS, sep="\t", keep_default_na=False, dtype=str)
    sample = pd.read_csv(SAMPLE, sep="\t", keep_default_na=False, dtype=str) if SAMPLE.is_file() else pairs.iloc[:0]
    real = list(pd.unique(pd.concat([pairs.question1, pairs.question2, sample.get("question1", pd.Series(dtype=str)),
                                     sample.get("question2", pd.Series(dtype=str))])))
    index = load_index(work / "index", expected_model_version="bench-random")
    known = set(real)
    generated = [t for t in index.texts if t not in known][: len(index) - len(real)]
    texts = real + generated
    order = np.random.default_rng(SEED).permutation(len(texts))
    texts = [texts[i] for i in order]
    position = {t: i for i, t in enumerate(texts)}
    t0 = time.perf_counter()
    served = build_lexical(texts)
    build_s = time.perf_counter() - t0
    exact = bm25_exact(texts)
    draw = pairs.sample(n=min(2000, len(pairs)), random_state=SEED)
    draw = draw[draw.question1 != draw.question2]
    q1 = np.array([position[q] for q in draw.question1])
    relevant = [np.array([position[q]]) for q in draw.question2]
    out: dict[str, Any] = {"questions": len(texts), "real_questions": len(real), "lexical_build_s": build_s,
                           "vocabulary": served.describe()["vocabulary"], "postings_per_term": served.postings_per_term,
                           "quality_queries": len(q1)}
    for name, lex in (("served", served), ("exact", exact)):
        ranked, _ = lex.search_positions(q1, 100)
        out[f"{name}_metrics"] = ranking_metrics(ranked, relevant)
    queries = list(draw.question1[:330])
    index.texts, index.lexical = texts, served
    encoder, vectorizer = _encoder(texts, SEED)
    qe = QueryEncoder(fast_encoder_from_keras(encoder, vectorizer, 64), 64, 0.5)
    for form in ("rrf", "weighted"):
        index.search_defaults = {"method": "hybrid", "hybrid": {"method": form, "weight": 0.5 if form == "weighted" else None},
                                 "rrf_k": 60}
        searcher = VersionSearcher(index, qe)
        out.update(_hybrid_against_dense(searcher, queries, "", form))
    out["dense"], out["lexical"] = out["dense_rrf_run"], out["lexical_rrf_run"]
    index.lexical = exact
    out["lexical_exact"] = _interleaved(searcher, queries, ("lexical",))["lexical"]
    return out
