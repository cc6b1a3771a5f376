"""Vocabulary: fitting, the vocabulary file round trip, OOV rate and vectorisation."""

from __future__ import annotations

import numpy as np
import pytest

from qdup.config import VocabConfig
from qdup.errors import QdupError
from qdup.model.vocab import (
    OOV_ID,
    fit_vectorizer,
    load_vectorizer,
    oov_rate,
    read_vocabulary,
    vectorize,
    vectorize_padded,
    write_vocabulary,
)

TEXTS = ["The cat sat.", "the CAT ran!", "a dog sat", "the end"]


@pytest.fixture(scope="module")
def vectorizer():
    return fit_vectorizer(TEXTS, VocabConfig())


def test_vocabulary_is_ordered_by_frequency_after_standardisation(vectorizer):
    vocab = vectorizer.get_vocabulary()
    # the x3, cat x2, sat x2 (ties by token, descending), then singletons.
    assert vocab[:2] == ["", "[UNK]"]
    assert vocab[2] == "the"
    assert set(vocab[3:5]) == {"cat", "sat"}
    assert set(vocab) == {"", "[UNK]", "the", "cat", "sat", "ran", "a", "dog", "end"}


@pytest.mark.parametrize("max_tokens, size", [(3, 3), (5, 5), (None, 9)])
def test_max_tokens_caps_the_vocabulary(max_tokens, size):
    v = fit_vectorizer(TEXTS, VocabConfig(max_tokens=max_tokens))
    assert v.vocabulary_size() == size


def test_vocabulary_file_round_trip_behaves_identically(vectorizer, tmp_path):
    path = tmp_path / "vocab.txt"
    n = write_vocabulary(vectorizer, path)
    assert n == 9
    lines = path.read_text().split("\n")
    assert lines[0] == "" and lines[1] == "[UNK]" and lines[2] == "the"
    loaded = load_vectorizer(path)
    probe = ["The cat sat on the mat!", "unknown words only", "?", "dog"]
    for a, b in zip(vectorize(vectorizer, probe, 10), vectorize(loaded, probe, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_vocabulary() == vectorizer.get_vocabulary()


def test_oov_rate_by_hand(vectorizer):
    # tokens: the, dog, sat, a, zebra -> zebra is unknown; "hello there" -> 2 unknown. 3 of 7.
    assert oov_rate(vectorizer, ["the dog sat", "a zebra", "hello there"]) == pytest.approx(3 / 7)
    assert oov_rate(vectorizer, ["the cat"]) == 0.0


def test_vectorize_truncates_and_marks_empty_as_oov(vectorizer):
    the = vectorizer.get_vocabulary().index("the")
    cat = vectorizer.get_vocabulary().index("cat")
    seqs = vectorize(vectorizer, ["the cat the cat the", "?", "", "cat zebra"], max_length=3)
    assert [s.tolist() for s in seqs] == [[the, cat, the], [OOV_ID], [OOV_ID], [cat, OOV_ID]]
    assert all(s.dtype == np.int32 for s in seqs)
    ids, lengths = vectorize_padded(vectorizer, ["the cat the cat the", "cat"], max_length=4)
    assert ids.shape == (2, 4)
    assert lengths.tolist() == [4, 1]
    assert ids[1].tolist() == [cat, 0, 0, 0]


def test_vectorize_spans_several_internal_batches(vectorizer, monkeypatch):
    import qdup.model.vocab

    monkeypatch.setattr(qdup.model.vocab, "VECTORIZE_BATCH", 3)
    texts = ["the"] * 4 + ["the cat sat the"] + ["cat"] * 2
    ids, lengths = vectorize_padded(vectorizer, texts, max_length=8)
    assert lengths.tolist() == [1, 1, 1, 1, 4, 1, 1]
    assert ids.shape == (7, 4)


@pytest.mark.parametrize(
    "texts, match",
    [
        (["ok", None], r"texts\[1\] is not a string"),
        (["ok", "fine", 3.5], r"texts\[2\] is not a string"),
        ("a single string", "not a single string"),
    ],
)
def test_non_string_input_is_named(vectorizer, texts, match):
    with pytest.raises(QdupError, match=match):
        vectorize(vectorizer, texts, 5)


def test_failures():
    with pytest.raises(QdupError, match="no texts"):
        fit_vectorizer([], VocabConfig())
    with pytest.raises(QdupError, match="no words"):
        fit_vectorizer(["?!", "..."], VocabConfig())


def test_oov_rate_without_tokens_is_an_error(vectorizer):
    with pytest.raises(QdupError, match="undefined"):
        oov_rate(vectorizer, ["?", "!!"])


def test_bad_vocabulary_files(tmp_path):
    with pytest.raises(QdupError, match="not found"):
        load_vectorizer(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("the\ncat\n")
    with pytest.raises(QdupError, match="does not start with"):
        read_vocabulary(bad)
    truncated = tmp_path / "truncated.txt"
    truncated.write_text("\n[UNK]\nthe")
    with pytest.raises(QdupError, match="truncated"):
        read_vocabulary(truncated)
