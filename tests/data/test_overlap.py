"""The word-overlap profile of labelled pairs, and the drift warning when new pairs do not look like the reranker's
fitting rows."""

from __future__ import annotations

import json

import pandas as pd

from qdup.config import ValidateConfig
from qdup.data.questions import overlap_profile, overlap_warnings, word_overlap
from qdup.stages.drift import reranker_fit


def test_word_overlap_is_the_jaccard_of_standardised_word_sets():
    assert word_overlap(["How do I learn Python?"], ["how do i LEARN python"]).tolist() == [1.0]
    assert word_overlap(["a b c d"], ["c d e f"]).tolist() == [2 / 6]
    assert word_overlap(["?"], ["!"]).tolist() == [0.0]


def test_pairs_unlike_the_fitting_rows_are_warned_about(demo_tsv, tmp_path):
    df = pd.read_csv(demo_tsv, sep="\t", keep_default_na=False)
    fitted = overlap_profile(df)
    assert abs(sum(fitted["shares"]) - 1) < 1e-5 and 0 <= fitted["easy_negative_share"] <= 1
    assert overlap_warnings(overlap_profile(df.sample(frac=1.0, random_state=0)), fitted, 0.15, 0.1) == []
    # New data whose negatives are all easy: unrelated questions paired at random.
    easy = df.copy()
    negatives = easy["is_duplicate"] == 0
    easy.loc[negatives, "question2"] = [f"zzq{i} unrelated words entirely" for i in range(int(negatives.sum()))]
    warnings = overlap_warnings(overlap_profile(easy), fitted, 0.15, 0.1)
    assert any("share of easy negatives" in w for w in warnings) and any("total variation" in w for w in warnings)
    meta = tmp_path / "reranker.json"
    meta.write_text(json.dumps({"fitting_profile": fitted}))
    found = reranker_fit(easy, meta, ValidateConfig())
    assert found["warnings"] == warnings and found["fitted"] == fitted
    assert reranker_fit(easy, tmp_path / "none.json", ValidateConfig()) is None
