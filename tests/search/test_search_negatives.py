"""The silver stage: search-shaped hard negatives from the training region only, outside the duplicate cluster, gated
by their own contract, keyed by their own stage key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qdup.config import SPLIT_NAMES, RetrainConfig, SplitConfig, TrainConfig, ValidateConfig
from qdup.data import contracts, splits
from qdup.data.demo import write_demo_tsv
from qdup.data.graph import duplicate_clusters
from qdup.data.silver import SILVER_FILE, read_checked_silver, read_silver, write_silver
from qdup.errors import DataContractError
from qdup.stages.silver import build_silver

SUITE = ValidateConfig().silver_suite


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("silver")
    write_demo_tsv(d / "demo.tsv", rows=1500, seed=7)
    frame = contracts.to_int_frame(contracts.read_tsv(d / "demo.tsv")[1])
    out, _ = splits.make_splits(frame, SplitConfig(n_train=1200, n_test=300))
    for name, part in out.items():
        splits.write_split(part, d / f"{name}.parquet")
    return d, out


@pytest.fixture(scope="module")
def silver(parts):
    d, _ = parts
    manifest = build_silver(d, TrainConfig(search_negatives=1, search_negatives_depth=5), ValidateConfig(), d)
    return manifest, read_silver(d / SILVER_FILE)


def test_neighbours_lie_outside_the_duplicate_cluster(parts, silver):
    _, p = parts
    manifest, s = silver
    region = pd.concat([p["train"], p["negatives"]], ignore_index=True)
    texts, labels = duplicate_clusters(region["question1"].to_numpy(), region["question2"].to_numpy(), region["is_duplicate"] == 1)
    cluster = dict(zip(texts.tolist(), labels.tolist(), strict=True))
    assert len(s) > 100 and manifest["silver"]["rows"] == len(s) and manifest["silver"]["suite"] == SUITE
    assert (s["query"].map(cluster) != s["candidate"].map(cluster)).all()
    assert (s["query"] != s["candidate"]).all()
    # Somewhere a same-cluster question was among BM25's top hits and was skipped: the test can fail.
    dup = p["train"]
    from qdup.search.bm25 import build_lexical

    corpus = pd.unique(pd.concat([s["query"], s["candidate"], dup["question2"]])).tolist()
    idx, _ = build_lexical(corpus).search(dup["question1"].tolist(), 1)
    assert (np.asarray(corpus, dtype=object)[idx[:, 0]] == dup["question2"].to_numpy()).any()
    assert s.groupby("query_qid")["rank"].max().le(5).all() and s["rank"].min() == 1
    assert (s["bm25"] > 0).all() and s["teacher"].isna().all() and set(s["kind"]) == {"bm25_negative"}


def test_only_training_region_questions_and_every_training_question_is_a_query(parts, silver):
    _, p = parts
    _, s = silver
    held = [p[n] for n in SPLIT_NAMES if n not in ("train", "negatives")]
    held_texts = {q for f in held for c in ("question1", "question2") for q in f[c]}
    held_ids = {q for f in held for c in ("qid1", "qid2") for q in f[c]}
    for col in ("query", "candidate"):
        assert not set(s[col]) & held_texts
    for col in ("query_qid", "candidate_qid"):
        assert not set(s[col]) & held_ids
    train_q = set(p["train"]["question1"]) | set(p["train"]["question2"])
    assert set(s["query"]) <= train_q and len(set(s["query"])) > 0.8 * len(train_q - held_texts)
    # Questions of labelled non-duplicates (in no duplicate pair) are candidates too.
    only_negative = (set(p["negatives"]["question1"]) | set(p["negatives"]["question2"])) - train_q
    assert set(s["candidate"]) & only_negative


def test_the_split_is_deterministic(parts, silver, tmp_path):
    d, _ = parts
    manifest, _ = silver
    again = build_silver(d, TrainConfig(search_negatives=1, search_negatives_depth=5), ValidateConfig(), tmp_path)
    assert again["silver"]["content_sha256"] == manifest["silver"]["content_sha256"]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: s.assign(kind="positive"), "kind"),
    (lambda s: s.assign(rank=0), "rank"),
    (lambda s: pd.concat([s, s.iloc[:1]]), "expect_compound_columns_to_be_unique"),
])
def test_the_contract_rejects_a_malformed_silver_file_in_one_line(silver, tmp_path, change, expected):
    _, s = silver
    path = tmp_path / SILVER_FILE
    write_silver(change(s.copy()), path)
    with pytest.raises(DataContractError) as info:
        read_checked_silver(path, SUITE)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message and "qdup run" in message
    path.write_bytes(b"not parquet")
    with pytest.raises(DataContractError, match="not a silver split") as info:
        read_checked_silver(path, SUITE)
    assert "\n" not in str(info.value)


def test_a_good_silver_file_is_read_back(silver, parts):
    d, _ = parts
    assert read_checked_silver(d / SILVER_FILE, SUITE).equals(silver[1])


def test_stage_keys_without_search_negatives_are_unchanged_by_its_options():
    from flows.retrain import stage_keys

    dataset = "ab" * 32
    off = stage_keys(RetrainConfig(), dataset)
    assert "silver" not in off
    assert stage_keys(RetrainConfig.model_validate({"train": {"search_negatives_depth": 3}}), dataset) == off
    on = stage_keys(RetrainConfig.model_validate({"train": {"search_negatives": 2}}), dataset)
    deeper = stage_keys(RetrainConfig.model_validate({"train": {"search_negatives": 2, "search_negatives_depth": 3}}), dataset)
    assert list(on) == [*list(off)[: list(off).index("train")], "silver", *list(off)[list(off).index("train"):]]
    assert on["splits"] == off["splits"] and on["train"] != off["train"] and on["silver"] != deeper["silver"]
    assert {k for k in on if on[k] != deeper[k]} == {"silver", "train", "evaluate", "rerank", "retrieval", "export", "index", "gate"}


def test_the_teacher_enters_the_silver_key_only_when_it_labels():
    from flows.retrain import stage_keys

    dataset = "ab" * 32
    plain = stage_keys(RetrainConfig.model_validate({"train": {"search_negatives": 1}}), dataset)
    rerank = stage_keys(RetrainConfig.model_validate({"train": {"search_negatives": 1}, "rerank": {"max_iter": 50}}), dataset)
    assert rerank["silver"] == plain["silver"]
    taught = {"train": {"search_negatives": 1, "silver_negative_score": 0.5}}
    one = stage_keys(RetrainConfig.model_validate(taught), dataset)
    other = stage_keys(RetrainConfig.model_validate(taught | {"rerank": {"max_iter": 50}}), dataset)
    assert len({plain["silver"], one["silver"], other["silver"]}) == 3
    # Silver duplicates alone run the stage too, without search negatives.
    positives = stage_keys(RetrainConfig.model_validate({"train": {"silver_positive_score": 0.7}}), dataset)
    assert "silver" in positives and positives["train"] != stage_keys(RetrainConfig(), dataset)["train"]
