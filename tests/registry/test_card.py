"""The model card: every section from a manifest, numbers as recorded, graceful for older versions."""

from __future__ import annotations

import pytest

from qdup.registry.card import NOT_RECORDED, card_texts, flat_test_metrics, model_card
from tests.registry.manifests import full_manifest, older_manifest

SECTIONS = ["## Intended use", "## Data", "## Model and parameters", "## Metrics (test split)", "## Threshold",
            "## Drift against production", "## Known limitations", "## Lineage"]


def test_full_card_has_every_section_in_order_with_the_recorded_numbers(tmp_path):
    m = full_manifest(tmp_path)
    card = model_card(m)
    assert card.startswith(f"# Model card: qdup duplicate-question detector — version {m['id']}\n")
    positions = [card.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    # Data: source, sha256, rows, split sizes and hashes, dates.
    for text in ("http://example.test/qqp.tsv", "a" * 64, "| rows (validated) | 2,000 |", "| duplicate share | 37.00% |",
                 "| train | 1,000 | 80 | `" + "1" * 64 + "` |", "| calibration | 300 |", "2026-01-01T00:00:00+00:00"):
        assert text in card, text
    # Model and parameters.
    assert "a bidirectional LSTM with 128 units" in card and "in-batch softmax loss (multiple-negatives ranking, scale 20.0)" in card
    assert "hashed character n-gram embeddings" in card and "never one of the anchor's own duplicate cluster" in card
    assert "| best epoch | 3 |" in card and '`model`: bidirectional=true' in card
    # Metrics with intervals beside the baseline, and the lift.
    mi, bi = m["metrics"]["intervals"]["metrics"]["roc_auc"], m["metrics"]["baseline"]["intervals"]["metrics"]["roc_auc"]
    roc, base = m["metrics"]["test"]["roc_auc"], m["metrics"]["baseline"]["test"]["ranking"]["roc_auc"]
    row = (f"| ROC AUC | {roc:.4f} | {mi['low']:.4f} – {mi['high']:.4f} | {base:.4f} | {bi['low']:.4f} – {bi['high']:.4f} | "
           f"{roc - base:+.4f} |")
    assert row in card
    assert mi["low"] <= roc <= mi["high"] and bi["low"] <= base <= bi["high"]
    acc = m["metrics"]["baseline"]["test"]["at_threshold"]["accuracy"]
    assert f"| accuracy | {m['metrics']['test']['accuracy']:.4f} |" in card and f"| {acc:.4f} |" in card
    assert ("Intervals are 95% intervals by cluster bootstrap over test pairs: whole groups (connected components of the "
            "question graph, pairs sharing a question) drawn with replacement; percentile intervals, threshold fixed "
            "(200 resamples, seed 42; 100 question clusters in 200 test pairs).") in card
    # Which split decided what.
    assert "Test is reported only: the thresholds and the reranker are fitted on the calibration split" in card
    assert "On the calibration split (the selection split): ROC AUC 0.8800, PR AUC 0.8000, accuracy 0.8100, F1 0.7800." in card
    assert "rows before 1,000: duplicates are `train`, non-duplicates `negatives`" in card
    assert 'ngram_range=[2, 5]' in card and "features=4321" in card
    assert ("Against production 20251201T000000000Z-012345 on the calibration split: challenger - production roc_auc:"
            in card)
    lift = m["metrics"]["lift_over_baseline"]
    assert f"Paired on the same resamples: model - lexical baseline roc_auc: {lift['difference']:+.4f} (95% CI" in card
    # Threshold and how it was chosen.
    assert "**0.5500**, chosen on the calibration split to maximise accuracy (calibration accuracy 0.8100)" in card
    assert "The lexical baseline's own threshold, chosen the same way: 0.5000." in card
    # Drift findings.
    assert "Status against 20251201T000000000Z-012345: **drifted** (mode warn)." in card
    assert "- expect_column_mean_to_be_between on column 'is_duplicate'" in card
    # Limitations, from the resource file, filled from the manifest.
    assert "Questions longer than 64 tokens are truncated to their first 64 tokens" in card
    assert "English only" in card and "(5,321 tokens)" in card and "duplicate share of 37.0%" in card
    # Lineage.
    assert "- encoder: `" + "e" * 64 + "`" in card and "Prefect flow run: quiet-fox (run-1)" in card
    assert "unknown" not in card.replace("one unknown token", "") and NOT_RECORDED not in card


def test_older_versions_render_with_gaps_said(tmp_path):
    card = model_card(older_manifest(tmp_path))
    assert all(s in card for s in SECTIONS)
    assert f"Intervals {NOT_RECORDED}." in card and f"Lexical baseline {NOT_RECORDED}." in card
    assert f"Drift {NOT_RECORDED}." in card
    assert "| metric | model | model 95% interval |\n" in card and "| ROC AUC |" in card
    assert "lexical baseline |" not in card


def test_a_card_before_publishing_and_an_empty_manifest(tmp_path):
    m = full_manifest(tmp_path)
    del m["id"], m["created"]
    assert model_card(m).startswith("# Model card: qdup duplicate-question detector\n")
    bare = model_card({})
    assert f"Metrics {NOT_RECORDED}." in bare and f"Threshold {NOT_RECORDED}." in bare
    # Values the manifest does not hold read "unknown" rather than failing.
    assert "Questions longer than unknown tokens" in bare


def test_limitations_are_the_resource_files():
    texts = card_texts()
    assert len(texts["limitations"]) >= 5 and any("{max_length}" in t for t in texts["limitations"])


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"test": {"ranking": {"roc_auc": 0.7}, "at_threshold": {"f1": 0.5}}}, {"roc_auc": 0.7, "f1": 0.5}),
        ({"test": {"roc_auc": 0.7, "f1": 0.5}}, {"roc_auc": 0.7, "f1": 0.5}),
        (None, {}),
    ],
)
def test_flat_test_metrics_reads_both_shapes(block, expected):
    assert flat_test_metrics(block) == expected


def test_card_of_a_version_whose_reranker_decides_with_subwords_describes_what_serves(tmp_path):
    from tests.registry.manifests import served_manifest

    m = served_manifest(tmp_path)
    assert m["parameters"]["model"]["subwords"] is True and m["served"]["decided_by"] == "reranker"
    card = model_card(m)
    # What serves leads, before everything else.
    assert card.index("## What serves") < card.index("## Intended use") < card.index("## Metrics (test split)")
    assert "**Duplicate decision: the pair reranker** (score >= 0.4400). Why: the reranker beats the encoder" in card
    assert "| pair reranker | decides | 0.4400 | 0.9100 | 0.8600 |" in card
    assert "| encoder | beside it (its cosine is reported as similarity) | 0.5500 |" in card
    assert "**Search: hybrid (weighted, dense weight 0.3)** by default, chosen on the selection split" in card
    # The decision rule names the reranker; sub-words on: misspellings are not invisible.
    assert "The pair reranker decides: a pair is predicted duplicate iff the reranker's score (a probability) >= its threshold 0.4400" in card
    assert "misspellings, rare words and new names are NOT invisible" in card and "are invisible to the model" not in card
    assert "predicted duplicate iff score >= threshold" not in card


def test_card_says_the_encoder_decides_where_the_reranker_did_not_beat_it(tmp_path):
    from tests.registry.manifests import served_manifest

    card = model_card(served_manifest(tmp_path, serves=False))
    assert "**Duplicate decision: the encoder** (score >= 0.5500). Why: the reranker does not beat the encoder" in card
    assert "| pair reranker | not serving decisions (re-orders reranked search only) | 0.4400 |" in card
    assert "The encoder decides: a pair is predicted duplicate iff its cosine >= the threshold 0.5500." in card
