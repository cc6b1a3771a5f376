"""Lexical side of hybrid search, compared: python -m bench.lexical --home DIR [--out bench/results/lexical] [--queries 500]."""

# Measures the lexical indexes hybrid search could use, each through the same retrieval evaluation the retrieval stage
# runs (`evaluate_retrieval`: lexical, dense and hybrid, the hybrid's form and weight chosen on the validation part):
#   - char TF-IDF: character 2-5-gram TF-IDF cosine, every query scored against the whole corpus (search before this);
#   - bm25s stems / bm25s words: qdup's BM25Index (bm25s's eager sparse index), with and without Snowball stemming;
#   - tantivy stems / tantivy words: tantivy's BM25 (in-memory index, one segment), the same tokens;
#   - qdup BM25 served: the index search serves (BM25Index.build: k1 1.2, each query word's highest-scoring postings
#     read to a fixed depth, the best candidates rescored exactly); qdup BM25 exact: the same index with every posting
#     read (the exact top k), side by side.
# on two tasks: (1) the retrieval split of the real sample's held-out pairs (the version's own split: retrieval_pairs of
# its splits, its seed), (2) the real duplicate pairs file (query = question1, relevant = its question2, corpus = every
# distinct question of the file; queries cut into a validation and a test half by a seeded draw). Dense encodings come
# from DIR's production version. Also: build seconds and one query's latency (top 100, one at a time) on task 2's corpus.
# The real text is read from ../shared/data at run time; nothing of it is written but figures.

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.results import Run, page
from bench.harness.stats import call_latencies, latency_summary
from bench.shared_data import REAL_PAIRS, real_pair_codes

KINDS = ("char TF-IDF", "bm25s stems", "bm25s words", "tantivy stems", "tantivy words", "qdup BM25 served",
         "qdup BM25 exact")


class TantivyIndex:
    """tantivy's BM25 over one in-memory segment (document ids = corpus positions), behind qdup's Lexical protocol."""

    kind = "tantivy"

    def __init__(self, texts, stem: bool):
        import tantivy

        builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase())
        self.analyzer = (builder.filter(tantivy.Filter.stemmer("english")) if stem else builder).build()
        schema = tantivy.SchemaBuilder()
        schema.add_text_field("text", tokenizer_name="qdup", index_option="freq")
        self.schema = schema.build()
        self.index = tantivy.Index(self.schema)
        self.index.register_tokenizer("qdup", self.analyzer)
        writer = self.index.writer(heap_size=200_000_000, num_threads=1)
        for text in texts:
            writer.add_document(tantivy.Document(text=text))
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.searcher = self.index.searcher()
        if self.searcher.num_segments != 1:
            raise RuntimeError(f"tantivy wrote {self.searcher.num_segments} segments; positions need one")
        self.texts = texts
        self._tantivy = tantivy

    def __len__(self) -> int:
        return len(self.texts)

    def _query(self, text: str):
        t = self._tantivy
        terms = sorted(set(self.analyzer.analyze(text)))
        if not terms:
            return None
        return t.Query.boolean_query([(t.Occur.Should, t.Query.term_query(self.schema, "text", term)) for term in terms])

    def _hits(self, text: str, limit: int) -> list[tuple[float, int]]:
        query = self._query(text)
        if query is None:
            return []
        return [(score, address.doc) for score, address in self.searcher.search(query, limit, count=False).hits]

    def _rows(self, texts, k: int, exclude=None):
        idx = np.full((len(texts), k), -1, dtype=np.int64)
        top = np.full((len(texts), k), -np.inf, dtype=np.float32)
        for i, text in enumerate(texts):
            hits = [(s, d) for s, d in self._hits(text, k + 1) if exclude is None or d != exclude[i]][:k]
            for j, (score, doc) in enumerate(hits):
                idx[i, j], top[i, j] = doc, score
        return idx, top

    def search(self, texts, k: int):
        return self._rows(list(texts), k)

    def search_positions(self, queries, k: int):
        return self._rows([self.texts[int(q)] for q in queries], k, [int(q) for q in queries])

    def query_pair_scores(self, texts, candidates):
        out = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for i, text in enumerate(texts):
            # Every matching document's score (tantivy has no per-document scoring call); fine at these corpus sizes.
            scores = dict((d, s) for s, d in self._hits(text, len(self)))
            out[i] = [scores.get(int(c), 0.0) if c >= 0 else -np.inf for c in candidates[i]]
        return out

    def pair_scores(self, queries, candidates):
        return self.query_pair_scores([self.texts[int(q)] for q in queries], candidates)


def bm25_exact(texts):
    """qdup's BM25 index reading every posting of each query word: the exact top k the served index approximates."""
    from qdup.search.bm25 import BM25Index

    return BM25Index.build(texts, postings_per_term=max(1, len(texts)))


def builder(kind: str):
    from qdup.search.bm25 import BM25Index
    from qdup.search.lexical import CharTfidfIndex

    return {
        "char TF-IDF": CharTfidfIndex,
        "bm25s stems": BM25Index.build,
        "qdup BM25 served": BM25Index.build,
        "qdup BM25 exact": bm25_exact,
        "bm25s words": lambda texts: BM25Index.build(texts, stem=False),
        "tantivy stems": lambda texts: TantivyIndex(texts, True),
        "tantivy words": lambda texts: TantivyIndex(texts, False),
    }[kind]


def real_pairs_split(max_queries: int, seed: int):
    """Task 2 as a RetrievalSplit: question1 queries (halves by a seeded draw), each relevant to its question2 only."""
    from qdup.search.retrieval import QuerySet, RetrievalSplit

    corpus, q1, q2 = real_pair_codes()
    order = np.random.default_rng(seed).permutation(len(q1))[: 2 * max_queries]
    halves = order[:max_queries], order[max_queries:]
    parts = [QuerySet(q1[h].astype(np.int64), [np.array([b], dtype=np.int64) for b in q2[h]]) for h in halves]
    return RetrievalSplit(corpus, np.zeros(len(corpus), dtype=np.int64), parts[0], parts[1])


def sample_split(home: Path, version: str, seed: int, max_queries: int):
    """Task 1: the version's retrieval split (its splits folder, its seed), each part capped at max_queries."""
    from qdup.config import SearchConfig
    from qdup.search.retrieval import retrieval_split
    from qdup.stages.retrieval import retrieval_pairs

    manifest = json.loads((home / "store" / "versions" / version / "manifest.json").read_text())
    splits = home / "runs" / "stages" / "splits" / manifest["stages"]["splits"]["key"][:24]
    cfg = SearchConfig(**manifest["parameters"]["search"])
    return retrieval_split(retrieval_pairs(splits), val_fraction=cfg.retrieval_val_fraction, seed=seed, max_queries=max_queries)


def latency(lexical, queries: list[str], k: int = 100) -> dict[str, float]:
    return latency_summary(call_latencies(lambda q: lexical.search([q], k), queries, warmup=20))


def measure(split, embeddings: np.ndarray, kinds: tuple[str, ...], timing_queries: list[str] | None) -> dict[str, Any]:
    from qdup.config import SearchConfig
    from qdup.search.lexical import evaluate_retrieval

    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        lexical = builder(kind)(split.corpus)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = evaluate_retrieval(split, embeddings, cfg=SearchConfig(), lexical_builder=lambda _texts, lx=lexical: lx)
        row = {"build_s": build_s, "evaluate_s": time.perf_counter() - t1, "corpus": len(split.corpus),
               "hybrid": {"method": result["hybrid"]["method"], "weight": result["hybrid"]["weight"]},
               **{f"{name}_{part}": result[name][part] for name in ("lexical", "dense", "hybrid") for part in ("val", "test")}}
        if timing_queries is not None:
            row["one_query"] = latency(lexical, timing_queries)
        out[kind] = row
        print(f"[bench.lexical] {kind}: lexical test MRR@10 {row['lexical_test']['mrr@10']:.4f}, hybrid test "
              f"{row['hybrid_test']['mrr@10']:.4f}, build {build_s:.2f} s", flush=True)
    return out


def render(r: dict[str, Any]) -> str:
    lines = [f"Dense encodings: version {r['version']} of the store in --home. MRR@10 and recall on the test part; the "
             "hybrid's form and weight chosen on the validation part (as the retrieval stage does); one query = "
             f"`search([q], 100)` one at a time over task 2's corpus ({r['timing_corpus']:,} questions), p50.", ""]
    for task, title in (("sample", "1. retrieval split of the real sample's held-out pairs"),
                        ("real_pairs", "2. real duplicate pairs file (question1 -> its question2)")):
        rows = r.get(task)
        if not rows:
            continue
        first = next(iter(rows.values()))
        lines += [f"## {title}", "", f"Corpus {first['corpus']:,} questions.", "",
                  "| lexical index | lexical MRR@10 | lexical recall@10 | recall@100 | hybrid (form, weight) | hybrid MRR@10 "
                  "| hybrid recall@10 | build s | one query p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
        for kind, m in rows.items():
            lat = r["real_pairs"].get(kind, {}).get("one_query", {}).get("p50_ms") if r.get("real_pairs") else None
            lines.append(
                f"| {kind} | {m['lexical_test']['mrr@10']:.4f} | {m['lexical_test']['recall@10']:.4f} | "
                f"{m['lexical_test']['recall@100']:.4f} | {m['hybrid']['method']} {m['hybrid']['weight']} | "
                f"{m['hybrid_test']['mrr@10']:.4f} | {m['hybrid_test']['recall@10']:.4f} | {m['build_s']:.2f} | "
                f"{'' if lat is None else f'{lat:.2f}'} |")
        dense = first["dense_test"]
        lines += ["", f"Dense alone: MRR@10 {dense['mrr@10']:.4f}, recall@10 {dense['recall@10']:.4f}.", ""]
    return page("Lexical side of hybrid search, compared", r, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True, help="QDUP_HOME with a production version trained on the real sample")
    parser.add_argument("--version", default="production")
    parser.add_argument("--out", type=Path, default=Path("bench/results/lexical"))
    parser.add_argument("--queries", type=int, default=500, help="queries per part (validation, test) of each task")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    args = parser.parse_args(argv)
    if not REAL_PAIRS.is_file():
        print(f"skipped: {REAL_PAIRS} not found")
        return 0
    from qdup.registry.store import ArtifactStore
    from qdup.search.encoder import load_query_encoder

    store = ArtifactStore(str(args.home / "store"))
    version = store.resolve(args.version)
    manifest = store.manifest(version)
    seed = int(manifest["parameters"]["seed"])
    encoder = load_query_encoder(store.open_version(version) / "model")
    kinds = tuple(args.kinds)
    run = Run("bench.lexical", argv)
    result: dict[str, Any] = {"version": version, "seed": seed}
    pairs = real_pairs_split(args.queries, seed)
    timing = [pairs.corpus[int(q)] for q in pairs.test.queries[:300]]
    result["timing_corpus"] = len(pairs.corpus)
    result["real_pairs"] = measure(pairs, encoder.encode(pairs.corpus), kinds, timing)
    sample = sample_split(args.home, version, seed, args.queries)
    result["sample"] = measure(sample, encoder.encode(sample.corpus), kinds, None)
    run.save(args.out, "lexical.json", result, "lexical.md", render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
