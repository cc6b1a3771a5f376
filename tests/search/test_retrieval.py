"""Retrieval evaluation: duplicate clusters, the question-disjoint split, ranking metrics, lexical and hybrid runs."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from qdup.config import SearchConfig
from qdup.errors import QdupError
from qdup.search.bm25 import BM25Index
from qdup.search.lexical import (
    CharTfidfIndex,
    candidate_union,
    evaluate_retrieval,
    fused_scores,
    normalise_lexical,
    rank_by,
    rrf_scores,
)
from qdup.search.retrieval import duplicate_clusters, ranking_metrics, retrieval_split


def pairs(rows):
    return pd.DataFrame(rows, columns=["question1", "question2", "is_duplicate"])


def test_clusters_are_the_transitive_closure_of_duplicates():
    corpus, cluster = duplicate_clusters(
        pairs([("a", "b", 1), ("b", "c", 1), ("d", "e", 1), ("c", "d", 0), ("f", "a", 0), ("e", "g", 1)])
    )
    label = dict(zip(corpus, cluster.tolist(), strict=True))
    assert sorted(corpus) == list("abcdefg")
    assert label["a"] == label["b"] == label["c"]
    assert label["d"] == label["e"] == label["g"]
    assert len({label["a"], label["d"], label["f"]}) == 3


def test_missing_columns_are_named():
    with pytest.raises(QdupError, match="missing column\\(s\\) \\['is_duplicate'\\]"):
        duplicate_clusters(pd.DataFrame({"question1": ["a"], "question2": ["b"]}))


def test_split_is_question_disjoint_and_relevant_sets_are_the_rest_of_the_cluster(demo_tsv):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    split = retrieval_split(df, val_fraction=0.5, seed=3)
    assert len(split.val) > 5 and len(split.test) > 5
    val_members = set(split.val.queries.tolist()).union(*map(set, split.val.relevant))
    test_members = set(split.test.queries.tolist()).union(*map(set, split.test.relevant))
    assert not val_members & test_members
    for q, rel in zip(split.test.queries, split.test.relevant, strict=True):
        same = set(np.flatnonzero(split.cluster == split.cluster[q]).tolist()) - {int(q)}
        assert set(rel.tolist()) == same and same
    # Every question of the pairs is in the corpus, once; same seed, same split.
    assert len(split.corpus) == len(set(df.question1) | set(df.question2)) == len(set(split.corpus))
    again = retrieval_split(df, val_fraction=0.5, seed=3)
    np.testing.assert_array_equal(again.test.queries, split.test.queries)
    assert not np.array_equal(retrieval_split(df, val_fraction=0.5, seed=4).test.queries, split.test.queries)


def test_metrics_on_a_hand_computed_example():
    rankings = np.array([[5, 3, 9, 7, 0], [1, 2, 4, 6, 8]])
    m = ranking_metrics(rankings, [np.array([3, 7]), np.array([1])])
    ndcg_first = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m["mrr@10"] == pytest.approx((0.5 + 1) / 2)
    assert m["ndcg@10"] == pytest.approx((ndcg_first + 1) / 2)
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@10"] == m["recall@100"] == pytest.approx(1.0)
    assert m["map@100"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1) / 2)
    # A relevant document beyond rank 10 counts for recall@100 and MAP only.
    late = np.concatenate([np.arange(20, 40), [3]])[None, :]
    m = ranking_metrics(late, [np.array([3])])
    assert m["mrr@10"] == m["ndcg@10"] == m["recall@10"] == 0 and m["recall@100"] == 1
    assert m["map@100"] == pytest.approx(1 / 21)


def test_ndcg_matches_scikit_learn():
    rng = np.random.default_rng(0)
    n_docs = 40
    for _ in range(20):
        scores = rng.random(n_docs)
        relevant = rng.choice(n_docs, size=rng.integers(1, 6), replace=False)
        truth = np.zeros(n_docs)
        truth[relevant] = 1
        ranking = np.argsort(-scores)[None, :]
        assert ranking_metrics(ranking, [relevant])["ndcg@10"] == pytest.approx(ndcg_score(truth[None], scores[None], k=10))


def test_char_tfidf_baseline_finds_near_spellings_first():
    lex = CharTfidfIndex(["How do I learn Python?", "What is the capital of France?", "How can I learn python fast?"])
    idx, scores = lex.search(["how to learn python"], 3)
    assert set(idx[0, :2].tolist()) == {0, 2} and idx[0, 2] == 1
    assert (np.diff(scores[0]) <= 0).all()
    own, own_scores = lex.search_positions(np.array([0]), 2)
    assert own[0].tolist() == [2, 1]
    np.testing.assert_allclose(lex.pair_scores(np.array([0]), own), own_scores, rtol=1e-5)
    np.testing.assert_allclose(lex.query_pair_scores(["How do I learn Python?"], own), own_scores, rtol=1e-5)


CORPUS = ["How do I learn Python?", "What is the capital of France?", "How can I learn python fast?",
          "Which is the best way of learning Python programming?", "Why is the sky blue?"]


def bm25(q_tf: dict[str, int], doc: list[str], docs: list[list[str]], k1=1.2, b=0.75) -> float:
    """Lucene's BM25 written out (idf = ln(1 + (N - df + 0.5) / (df + 0.5)); no (k1 + 1) factor, as Lucene 8 dropped it),
    to check the library's scores."""
    avg = sum(len(d) for d in docs) / len(docs)
    total = 0.0
    for term in q_tf:
        df = sum(term in d for d in docs)
        tf = doc.count(term)
        if df and tf:
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            total += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avg))
    return total


def test_bm25_index_ranks_by_lucene_bm25_of_word_stems():
    lex = BM25Index.build(CORPUS)
    idx, scores = lex.search(["learning python"], 5)
    # "learning" and "learn" share a stem; questions sharing no word are not returned (-1, -inf).
    assert set(idx[0, :3].tolist()) == {0, 2, 3} and idx[0, 3:].tolist() == [-1, -1]
    assert (np.diff(scores[0, :3]) <= 0).all() and np.isneginf(scores[0, 3:]).all()
    stems = [["how", "do", "i", "learn", "python"], ["what", "is", "the", "capit", "of", "franc"],
             ["how", "can", "i", "learn", "python", "fast"], ["which", "is", "the", "best", "way", "of", "learn", "python", "program"],
             ["whi", "is", "the", "sky", "blue"]]
    want = [bm25({"learn": 1, "python": 1}, stems[int(i)], stems) for i in idx[0, :3]]
    np.testing.assert_allclose(scores[0, :3], want, rtol=1e-5)
    own, own_scores = lex.search_positions(np.array([0]), 4)
    assert 0 not in own[0].tolist() and own[0, 0] == 2
    np.testing.assert_allclose(lex.pair_scores(np.array([0]), own), own_scores, rtol=1e-5)
    np.testing.assert_allclose(lex.query_pair_scores([CORPUS[0]], own), lex.pair_scores(np.array([0]), own))
    none, none_scores = lex.search(["zebra"], 2)
    assert none.tolist() == [[-1, -1]] and np.isneginf(none_scores).all()


def test_bm25_matrix_scores_as_bm25s_own_index_does(demo_tsv):
    import bm25s

    from qdup.search.bm25 import bm25_matrix

    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    texts = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:400] + ["???"]  # and a question with no word
    tokens = [t.lower().replace("?", " ").split() for t in texts]
    theirs = bm25s.BM25(k1=1.2, b=0.75)  # qdup's parameters (tantivy's)
    theirs.index(tokens, show_progress=False)
    scores, vocab = bm25_matrix(tokens)
    assert set(vocab) == set(theirs.vocab_dict) and vocab[""] == len(vocab) - 1
    ours = bm25s.BM25()
    ours.scores, ours.vocab_dict, ours.nonoccurrence_array = scores, vocab, None
    for query in tokens[:40:7] + [["how", "do", "i", "zebra"]]:
        np.testing.assert_allclose(ours.get_scores(query), theirs.get_scores(query), rtol=1e-5, atol=1e-6)
    assert bm25_matrix(tokens)[1] == vocab  # terms numbered in first-seen order: a rebuild is identical


def _exhaustive(lex: BM25Index, query: str, k: int) -> tuple[np.ndarray, list[int]]:
    full = lex.scores(query).astype(np.float64)
    order = np.lexsort((np.arange(len(full)), -full))
    return full, [int(i) for i in order[:k] if full[i] > 0]


@pytest.mark.parametrize("k", [1, 5, 100])
def test_bm25_top_k_is_the_exhaustive_top_k_when_no_term_has_more_postings_than_it_reads(demo_tsv, k):
    """Every query term's postings read whole (the corpus is smaller than postings_per_term): the top k is what scoring
    every question and sorting would give, scores and order alike; questions of equal score may swap."""
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    texts = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:1500]
    lex = BM25Index.build(texts)
    assert lex.postings_per_term >= len(texts) and "rescored exactly" in lex.describe()["top_k"]
    queries = texts[::60] + ["How do I learn Python quickly?", "the the the", "zebra"]
    idx, scores = lex.search(queries, k)
    for row, query in enumerate(queries):
        full, want = _exhaustive(lex, query, k)
        got = [int(i) for i in idx[row] if i >= 0]
        np.testing.assert_allclose(scores[row, : len(got)], full[got], rtol=1e-5)
        np.testing.assert_allclose(full[got], full[want], rtol=1e-5)  # the same scores (ties may swap equal ones)
        assert len(got) == len(want)
    some = np.arange(0, len(texts), 97)
    own, _ = lex.search_positions(some, k)
    assert not (own == some[:, None]).any()


def test_bm25_top_k_past_the_postings_it_reads_is_exactly_scored_and_near_the_exhaustive(demo_tsv):
    """With only 30 postings read per term (the demo's common words hold hundreds), a query's work is bounded: the
    candidates are the union of those prefixes, the answers carry their exact scores in order, and they stay close to
    the exhaustive top 10."""
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    texts = list(dict.fromkeys(list(df.question1) + list(df.question2)))[:1500]
    lex = BM25Index.build(texts, postings_per_term=30)
    queries = texts[::40]
    idx, scores = lex.search(queries, 10)
    overlap = []
    for row, query in enumerate(queries):
        ids = lex.token_ids(query)
        assert len(lex._sum_postings(ids, 30)[0]) <= 30 * len(ids) < len(lex._sum_postings(ids, None)[0]) or len(ids) == 0
        full, want = _exhaustive(lex, query, 10)
        got = [int(i) for i in idx[row] if i >= 0]
        np.testing.assert_allclose(scores[row, : len(got)], full[got], rtol=1e-5)
        assert (np.diff(scores[row, : len(got)]) <= 1e-6).all()
        overlap.append(len(set(got) & set(want)) / len(want))
    assert 0.6 <= float(np.mean(overlap)) < 1.0  # close, and not exact: the cap is in force


def test_bm25_index_saves_and_loads_the_same_scores(tmp_path):
    lex = BM25Index.build(CORPUS)
    names = lex.save(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == names
    back = BM25Index.load(tmp_path, CORPUS)
    np.testing.assert_array_equal(back._data, lex._data)  # saved in score order: loaded as it was built
    np.testing.assert_array_equal(back._indices, lex._indices)
    for query in ("learning python", "capital of france", "sky"):
        np.testing.assert_array_equal(back.scores(query), lex.scores(query))
        for a, b in zip(back.search([query], 3), lex.search([query], 3), strict=True):
            np.testing.assert_array_equal(a, b)


def test_weighted_fusion_mixes_the_cosine_with_the_lexical_score_scaled_by_the_querys_best():
    cands = np.array([[3, 5, -1]])
    dense = np.array([[0.9, 0.5, -np.inf]])
    lexical = np.array([[2.0, 8.0, -np.inf]])
    np.testing.assert_allclose(normalise_lexical(lexical), [[0.25, 1.0, 0.0]])
    fused = fused_scores(cands, np.array([[3, 5]]), np.array([[5, 3]]), dense, lexical, "weighted", 0.5, 60)
    np.testing.assert_allclose(fused[0, :2], [0.5 * 0.9 + 0.5 * 0.25, 0.5 * 0.5 + 0.5 * 1.0])
    assert np.isneginf(fused[0, 2])
    assert normalise_lexical(np.array([[0.0, -np.inf]])).tolist() == [[0.0, 0.0]]


def test_fusion_by_reciprocal_rank():
    dense = np.array([[4, 2, 9]])
    lexical = np.array([[2, 7, -1]])
    cands = candidate_union(dense, lexical)
    assert sorted(c for c in cands[0].tolist() if c >= 0) == [2, 4, 7, 9]
    fused = rank_by(cands, rrf_scores(cands, dense, lexical, 60), 4)
    # 2: 1/62 + 1/61 beats 4: 1/61; 7: 1/62 beats 9: 1/63.
    assert fused[0].tolist() == [2, 4, 7, 9]


def test_evaluate_retrieval_reports_three_methods_and_chooses_on_validation(demo_tsv):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    split = retrieval_split(df, seed=1)
    # Stand-in dense encodings: TF-IDF of words (any fixed unit vectors of the corpus serve to exercise the code).
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer().fit_transform(split.corpus)
    emb = TruncatedSVD(32, random_state=0).fit_transform(words).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    result = evaluate_retrieval(split, emb, cfg=SearchConfig(hybrid_weight_step=0.25))
    assert set(result) >= {"lexical", "dense", "hybrid", "best", "hybrid_grid", "counts"}
    assert result["lexical_index"] == "bm25"  # the lexical side search serves
    assert len(result["hybrid_grid"]) == 1 + 5
    assert result["hybrid"]["method"] in ("rrf", "weighted")
    best_val = max(t["mrr@10"] for t in result["hybrid_grid"])
    assert result["hybrid"]["val"]["mrr@10"] == pytest.approx(best_val)
    for name in ("lexical", "dense", "hybrid"):
        assert 0 < result[name]["test"]["mrr@10"] <= 1
        assert result[name]["test"]["recall@1"] <= result[name]["test"]["recall@10"] <= result[name]["test"]["recall@100"]
    # Weight 1 is dense alone, weight 0 lexical alone (same candidates, so the same validation MRR).
    grid = {t["weight"]: t["mrr@10"] for t in result["hybrid_grid"] if t["method"] == "weighted"}
    assert grid[1.0] == pytest.approx(result["dense"]["val"]["mrr@10"], abs=0.02)
    assert grid[0.0] == pytest.approx(result["lexical"]["val"]["mrr@10"], abs=0.02)


def test_retrieval_parts_test_from_test_only_selection_from_selection_only(tmp_path):
    from qdup.data.splits import SPLITS, write_split
    from qdup.stages.retrieval import retrieval_pairs, selection_pairs

    rows = {
        "train": [("a", "b", 1)],
        "negatives": [("c", "d", 0)],
        "val": [("k", "l", 1)],
        "test": [("a", "x", 1), ("c", "y", 1), ("e", "f", 1), ("k", "z", 1)],
        "calibration": [("g", "h", 1), ("e", "i", 0), ("k", "m", 1)],
        "selection": [("p", "q", 1), ("p", "r", 0)],
        "gate": [("s", "t", 1), ("s", "u", 0)],
    }
    ids = iter(range(100))
    for name in SPLITS:
        part = pd.DataFrame(
            [(next(ids), ord(q1), ord(q2), q1, q2, y) for q1, q2, y in rows[name]],
            columns=["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ).astype({"is_duplicate": "int8"})
        write_split(part, tmp_path / f"{name}.parquet")
    pairs = retrieval_pairs(tmp_path)
    # (a, x) shares a train question, (c, y) a negatives question, (k, z) a val question (early stopping's);
    # nothing of calibration, selection or gate.
    assert list(zip(pairs["question1"], pairs["question2"], strict=True)) == [("e", "f")]
    chosen_on = selection_pairs(tmp_path)
    assert list(zip(chosen_on["question1"], chosen_on["question2"], strict=True)) == [("p", "q"), ("p", "r")]


def test_evaluation_with_a_test_split_never_lets_test_reach_the_choice(demo_tsv):
    """Selection and test parts on their own corpora: permuting the test part's labels changes test figures only."""
    from qdup.search.retrieval import query_part

    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    sel_df, test_df = df.iloc[:300], df.iloc[300:]
    rng = np.random.default_rng(0)

    def embed(corpus):
        e = np.stack([np.frombuffer(hashlib.sha256(q.encode()).digest()[:16], dtype=np.uint8) for q in corpus]).astype(np.float32)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    sel, held = query_part(sel_df), query_part(test_df)
    cfg = SearchConfig(hybrid_weight_step=0.25)
    a = evaluate_retrieval(sel, embed(sel.corpus), cfg=cfg, test_split=held, test_embeddings=embed(held.corpus))
    permuted = test_df.assign(is_duplicate=rng.permutation(test_df["is_duplicate"].to_numpy()))
    held_p = query_part(permuted)
    b = evaluate_retrieval(sel, embed(sel.corpus), cfg=cfg, test_split=held_p, test_embeddings=embed(held_p.corpus))
    assert a["hybrid_grid"] == b["hybrid_grid"] and a["hybrid"]["method"] == b["hybrid"]["method"] and a["best"] == b["best"]
    assert a["dense"]["val"] == b["dense"]["val"] and a["dense"]["test"] != b["dense"]["test"]
    assert a["counts"]["test_corpus"] == len(held.corpus) and a["counts"]["corpus"] == len(sel.corpus)


def test_blocked_evaluation_reranks_and_fuses_as_one_block_would(demo_tsv, monkeypatch):
    """The evaluation works by blocks of queries (memory); a reranker that scores by the cosine gives the dense ranking
    back, and small blocks give the same figures as one block."""
    import qdup.search.lexical as lexical

    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    split = retrieval_split(df, seed=1)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(split.corpus), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cfg = SearchConfig(hybrid_weight_step=0.5)
    by_cosine = lambda q, c, cos: cos  # noqa: E731
    whole = evaluate_retrieval(split, emb, cfg=cfg, rerank=by_cosine)
    assert whole["reranked"]["test"] == pytest.approx(whole["dense"]["test"])
    monkeypatch.setattr(lexical, "ROW_BLOCK", 7)
    blocked = evaluate_retrieval(split, emb, cfg=cfg, rerank=by_cosine)
    assert blocked["hybrid_grid"] == whole["hybrid_grid"] and blocked["hybrid"] == whole["hybrid"]
    assert blocked["reranked"] == whole["reranked"]
