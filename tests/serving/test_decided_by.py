"""Which score decides is said wherever a decision is shown: `qdup predict`'s line, and a predictor's decisions."""

from __future__ import annotations

import numpy as np

from qdup.cli.main import decision_line
from qdup.serving.predictor import Predictor


class _Encoder:
    max_length = 8

    def similarity(self, a, b, batch_size=None):
        return np.full(len(a), 0.7953, dtype=np.float32)


class _Reranker:
    threshold = 0.44

    def score(self, q1, q2, cosine):
        return np.full(len(q1), 0.03)

    def decide(self, scores):
        return np.asarray(scores) >= self.threshold


def test_predict_line_names_the_score_that_decided():
    out = {"similarity": 0.7953, "threshold": 0.7101, "duplicate": False, "reranker_score": 0.03, "reranker_threshold": 0.44,
           "decided_by": "reranker"}
    assert decision_line(out) == ("duplicate=false (reranker 0.0300 < 0.4400) similarity=0.7953 threshold=0.7101 "
                                  "reranker_score=0.0300 reranker_threshold=0.4400")
    encoder = {"similarity": 0.7953, "threshold": 0.7101, "duplicate": True, "decided_by": "encoder"}
    assert decision_line(encoder) == "duplicate=true (encoder cosine 0.7953 >= 0.7101) similarity=0.7953 threshold=0.7101"


def test_the_reranker_decides_only_where_the_export_says_it_serves():
    serving = Predictor(_Encoder(), 0.7101, 8, meta={"reranker": {"serves": True}}, reranker=_Reranker())
    assert serving.decided_by == "reranker" and serving.decision_threshold == 0.44
    assert serving.decide(["a"], ["b"])["duplicate"].tolist() == [False]  # reranker 0.03 < 0.44
    beside = Predictor(_Encoder(), 0.7101, 8, meta={"reranker": {"serves": False}}, reranker=_Reranker())
    assert beside.decided_by == "encoder" and beside.decision_threshold == 0.7101
    got = beside.decide(["a"], ["b"])
    assert got["duplicate"].tolist() == [True] and got["reranker_score"].tolist() == [0.03]  # cosine 0.7953 >= 0.7101
    assert beside.served_scores(["a"], ["b"]).tolist() == [np.float32(0.7953)]
