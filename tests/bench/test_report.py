"""The benchmark's pure helpers: statistics, split sizes, target checks and the markdown report."""

from __future__ import annotations

import pytest

from bench.harness.stats import latency_summary, percentile
from bench.harness.tables import GIB, table
from bench.report import FULL_ROWS, capped_rows, evaluate_targets, prep_seconds, render_markdown, split_counts


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("bad", [[], None])
def test_percentile_of_nothing_is_an_error(bad):
    with pytest.raises((ValueError, TypeError)):
        percentile(bad, 50)


def test_latency_summary_is_in_milliseconds():
    s = latency_summary([0.001] * 99 + [0.011])
    assert s["n"] == 100
    assert s["p50_ms"] == pytest.approx(1.0)
    assert s["max_ms"] == pytest.approx(11.0)
    assert s["p99_ms"] == pytest.approx(1.1)


def test_split_counts_use_the_project_default_at_full_scale():
    assert split_counts(FULL_ROWS) == (300_000, 10_240)
    assert split_counts(20_000) == (0.75, 0.25)


def test_capped_rows():
    assert capped_rows(1000, None, 256) == 1000
    assert capped_rows(1000, 2, 256) == 512
    assert capped_rows(100, 2, 256) == 100


def _results(**over):
    stages = {
        "validate": {"ok": True, "seconds": 20.0, "peak_rss_bytes": GIB},
        "splits": {"ok": True, "seconds": 15.0, "peak_rss_bytes": 2 * GIB},
        "vocab": {"ok": True, "seconds": 10.0, "peak_rss_bytes": 5 * GIB},
        "inference": {
            "ok": True,
            "seconds": 5.0,
            "peak_rss_bytes": GIB,
            "info": {
                "single_pair": {"p50_ms": 1.0, "p99_ms": 3.0, "n": 300},
                "batch_similarity": {"pairs_per_s": 5_000.0, "seconds": 10.0, "pairs": 50_000},
                "score_file": {"pairs_per_s": 12_000.0, "seconds": 4.0, "pairs": 50_000},
            },
        },
        "publish": {"ok": False, "status": "n/a (store not implemented)"},
    }
    training = {
        "qdup": {"train_pairs": 1000, "epoch_seconds": [1.0, 1.0], "pairs_per_s": 1000.0, "test_accuracy": 0.80},
        "baseline": {"train_pairs": 1000, "epoch_seconds": [4.0, 4.0], "pairs_per_s": 250.0, "test_accuracy": 0.802},
        "comparison": {"speedup": 4.0, "qdup_test_accuracy": 0.80, "baseline_test_accuracy": 0.802},
    }
    res = {
        "command": "python -m bench.run",
        "machine": {"cpu_model": "test cpu"},
        "datasets": {"generated": {"rows": FULL_ROWS, "stages": stages, "training": training}, "real_10k": {"skipped": "absent"}},
        "warm_rerun": {"warm_seconds": 25.0, "warm_rc": 0, "served_seconds": 6.5, "served_rc": 0},
    }
    res.update(over)
    return res


def test_targets_met_and_missed():
    rows = {r["name"].split(" (")[0]: r for r in evaluate_targets(_results())}
    assert rows["training throughput vs baseline"]["met"] is True  # 4x, accuracy within tolerance
    assert rows["validate + splits + vocab"]["met"] is True
    assert "45.0 s" in rows["validate + splits + vocab"]["measured"]
    assert rows["warm re-run"]["met"] is False
    assert "10.0 s over" in rows["warm re-run"]["margin"]
    assert rows["warm re-run against a running Prefect server"]["met"] is True
    assert rows["single-pair predict latency p50"]["met"] is True
    assert rows["batch scoring throughput"]["met"] is True  # score_file is the measured path
    assert rows["peak RSS, every stage"]["met"] is False
    assert "vocab" in rows["peak RSS, every stage"]["measured"]


def test_accuracy_loss_fails_the_speed_target():
    res = _results()
    res["datasets"]["generated"]["training"]["comparison"]["baseline_test_accuracy"] = 0.9
    row = evaluate_targets(res)[0]
    assert row["met"] is False


def test_unmeasured_targets_are_na():
    rows = evaluate_targets({"datasets": {}})
    assert all(r["met"] is None for r in rows)


def test_prep_seconds_needs_all_three_stages():
    assert prep_seconds({"validate": {"ok": True, "seconds": 1.0}}) is None


def test_markdown_has_every_section():
    md = render_markdown(_results(targets=evaluate_targets(_results())))
    assert "## Targets" in md and "| met? |" in md
    assert "**no**" in md
    assert "n/a (store not implemented)" in md
    assert "Skipped: absent" in md
    assert "| speed-up" not in md  # the speed-up is a sentence, not a table row
    assert "4.00x" in md


def test_table_escapes_pipes():
    assert table(["a"], [["x|y"]]).splitlines()[-1] == "| x\\|y |"
