"""The load benchmark's feedback pieces: seeded request bodies the API accepts, and the targets rows."""

from __future__ import annotations

from bench.load.feedback import feedback_bodies, feedback_targets

QUESTIONS = [f"How do I learn topic number {i}?" for i in range(10)]


def test_bodies_are_seeded_judgements_of_pool_pairs():
    bodies = feedback_bodies(QUESTIONS, "v1", 5, seed=3)
    assert bodies == feedback_bodies(QUESTIONS, "v1", 5, seed=3) != feedback_bodies(QUESTIONS, "v1", 5, seed=4)
    assert sorted(q for b in bodies for q in (b["question1"], b["question2"])) == sorted(QUESTIONS)
    assert {b["label"] for b in bodies} <= {"duplicate", "not_duplicate"} and {b["version"] for b in bodies} == {"v1"}
    assert set(bodies[0]) == {"question1", "question2", "label", "version", "source"}


def test_targets_rows_judge_rate_p99_storage_and_similarity_kept():
    def rows(**fb):
        return feedback_targets({"feedback": fb})

    good = rows(writes_per_s=800.0, writes_p99_ms=20.0, acknowledged_all_stored=True, similarity_kept=0.95,
                similarity_alone_per_s=1000.0, similarity_during_per_s=950.0)
    assert [r["met"] for r in good] == [True, True]
    slow = rows(writes_per_s=400.0, writes_p99_ms=20.0, acknowledged_all_stored=True, similarity_kept=0.5)
    assert [r["met"] for r in slow] == [False, False]
    lost = rows(writes_per_s=800.0, writes_p99_ms=20.0, acknowledged_all_stored=False, similarity_kept=0.95)
    assert lost[0]["met"] is False
    assert [r["met"] for r in feedback_targets({})] == [None, None]
