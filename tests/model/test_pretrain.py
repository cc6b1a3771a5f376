"""The optional pretrain stage: SimCSE-style pre-training on the train region's questions, and training from its encoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qdup.config import ModelConfig, PretrainConfig, RetrainConfig, TrainConfig, VocabConfig
from qdup.data.splits import write_split
from qdup.errors import QdupError
from qdup.model import network
from qdup.model.train import train_model
from qdup.model.vocab import fit_vectorizer, write_vocabulary
from qdup.stages.pretrain import build_pretrain, pretraining_questions
from tests.model.test_train import paraphrases

pytestmark = pytest.mark.slow
TINY = ModelConfig(embedding_dim=16, lstm_units=16, max_length=12, subwords=True, subword_buckets=2000)


def _split(df: pd.DataFrame, label: int, start: int) -> pd.DataFrame:
    n = len(df)
    return pd.DataFrame({"id": np.arange(start, start + n), "qid1": np.arange(2 * start, 2 * start + n),
                         "qid2": np.arange(2 * start + n, 2 * start + 2 * n), "question1": df["question1"].values,
                         "question2": df["question2"].values, "is_duplicate": np.int8(label)})


@pytest.fixture(scope="module")
def splits_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("splits")
    train = paraphrases(300, seed=0)
    negatives = pd.DataFrame({"question1": train["question1"][:100].values, "question2": ["is chess a sport"] * 50 + ["why is the sky blue"] * 50})
    write_split(_split(train, 1, 0), d / "train.parquet")
    write_split(_split(negatives, 0, 1000), d / "negatives.parquet")
    write_split(_split(paraphrases(96, seed=1), 1, 2000), d / "val.parquet")
    vec = fit_vectorizer(train["question1"].tolist() + train["question2"].tolist(), VocabConfig())
    write_vocabulary(vec, d / "vocabulary.txt")
    return d


def test_questions_come_from_the_train_region_only(splits_dir):
    q = pretraining_questions(splits_dir, PretrainConfig(), seed=0)
    assert (q["question1"] == q["question2"]).all() and q["question1"].is_unique
    assert "is chess a sport" in set(q["question1"])  # a question of a labelled non-duplicate only
    val = set(pd.read_parquet(splits_dir / "val.parquet")["question1"]) - set(pd.read_parquet(splits_dir / "train.parquet")["question1"])
    assert not val & set(q["question1"])
    few = pretraining_questions(splits_dir, PretrainConfig(max_questions=10), seed=0)
    assert len(few) == 10 and few.equals(pretraining_questions(splits_dir, PretrainConfig(max_questions=10), seed=0))


def test_pretrained_encoder_is_where_training_starts(splits_dir, tmp_path):
    out = tmp_path / "pre"
    out.mkdir()
    m = build_pretrain(splits_dir, splits_dir / "vocabulary.txt", TINY, PretrainConfig(epochs=2, batch_size=64), 0, tmp_path / "w", out,
                       log=lambda s: None)
    assert m["questions"] > 300 and m["epochs_run"] >= 1
    pre = network.load_encoder(out / "encoder.keras")
    from qdup.model.vocab import load_vectorizer

    vec = load_vectorizer(splits_dir / "vocabulary.txt")
    train = pd.read_parquet(splits_dir / "train.parquet")
    val = pd.read_parquet(splits_dir / "val.parquet")
    cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-9)
    r = train_model(train, val, vec, TINY, cfg, seed=0, work_dir=tmp_path / "t", log=lambda s: None, init_encoder=out / "encoder.keras")
    trained = network.load_encoder(r.encoder_path)
    # A learning rate of 1e-9 barely moves the weights: training started from the pretrained ones.
    for a, b in zip(pre.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    other = TINY.model_copy(update={"embedding_dim": 8})
    with pytest.raises(QdupError, match="do not fit"):
        train_model(train, val, vec, other, cfg, seed=0, work_dir=tmp_path / "t2", log=lambda s: None, init_encoder=out / "encoder.keras")


def test_pretraining_without_dropout_is_refused():
    with pytest.raises(ValueError, match="pretrain.enabled"):
        RetrainConfig.model_validate({"pretrain": {"enabled": True}, "model": {"dropout": 0, "token_dropout": 0}})
