"""Tests for the synthetic Quora Question Pairs generator (format, statistics, determinism)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qdup.data.demo import COLUMNS, generate_pairs, write_demo_tsv
from qdup.data.demo_vocabulary import load_vocabulary, resource_dir
from qdup.errors import ConfigError
from qdup.fileio import sha256_file

ROWS = 20_000
HEADER = b"id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
# sha256 of today's output: any change to the generator or its vocabulary files changes these.
PINNED_SHA256 = {
    (600, 7): "28b5c37590bb548cf4b7522042e7a16a71d622944b715fb53974688a5c7c5489",
    (2000, 1): "c3762e24827d7460782adffec9237c53848a8fcc4bc97f415aa5eefb277fffe9",
}
# A field holding a double quote, as the release writes it: wrapped in quotes, inner quotes doubled.
QUOTED_FIELD = re.compile(r'"(?:[^"]|"")*"')
# Function words; what is left is a question's content words.
STOPWORDS = frozenset(
    "a an the is are am was were be been being do does did i me my you your we our it its of to "
    "in on for at by with from and or but as how what which who whom why when where can could "
    "should would will shall may might must there this that these those so if into about than "
    "then some any more most".split()
)


def content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9+#']+", text.lower())) - STOPWORDS


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return generate_pairs(ROWS, seed=0)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("demo") / "demo.tsv"
    return path, write_demo_tsv(path, rows=ROWS, seed=0)


@pytest.fixture(scope="module")
def questions(pairs) -> pd.Series:
    return pd.concat([pairs["question1"], pairs["question2"]], ignore_index=True)


def test_header_and_line_endings(written):
    path, _ = written
    raw = path.read_bytes()
    assert raw.startswith(HEADER)
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n")
    assert b"\r" not in raw
    # One line per row plus the header: no question contains a newline.
    assert raw.count(b"\n") == ROWS + 1


def test_columns_and_dtypes(pairs):
    assert tuple(pairs.columns) == COLUMNS
    assert COLUMNS == ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    for col in ("id", "qid1", "qid2", "is_duplicate"):
        assert pairs[col].dtype == np.int64, col
    for col in ("question1", "question2"):
        assert pd.api.types.is_string_dtype(pairs[col]), col
        assert pairs[col].map(type).eq(str).all(), col
    assert len(pairs) == ROWS


def test_reads_back_to_the_same_rows(written, pairs):
    path, info = written
    back = pd.read_csv(path, sep="\t", keep_default_na=False)
    pd.testing.assert_frame_equal(back, pairs)
    assert info == {
        "path": str(path),
        "rows": ROWS,
        "duplicates": int(pairs["is_duplicate"].sum()),
        "sha256": sha256_file(path),
    }


def test_quotes_are_doubled_and_wrapped(written, pairs):
    path, _ = written
    lines = path.read_bytes().decode("utf-8").split("\n")[1:-1]
    assert len(lines) == ROWS
    quoted = 0
    for line, q1, q2 in zip(lines, pairs["question1"], pairs["question2"]):
        fields = line.split("\t")  # no question holds a tab, so a tab always separates fields
        assert len(fields) == len(COLUMNS), line
        for raw, text in ((fields[3], q1), (fields[4], q2)):
            if '"' in text:
                # Wrapped and doubled, exactly: undoing that by hand gives the text back.
                assert QUOTED_FIELD.fullmatch(raw), raw
                assert raw[1:-1].replace('""', '"') == text
                quoted += 1
            else:
                # QUOTE_MINIMAL: everything else is written bare, apostrophes included.
                assert raw == text
    # About 1-2% of questions carry double quotes, as in the release.
    assert 0.01 * ROWS < quoted < 0.1 * ROWS
    # The csv module with the release's dialect reads the same fields back.
    with open(path, newline="", encoding="utf-8") as f:
        parsed = list(csv.reader(f, delimiter="\t"))
    assert parsed[0] == list(COLUMNS)
    assert [r[3] for r in parsed[1:]] == pairs["question1"].tolist()
    assert [r[4] for r in parsed[1:]] == pairs["question2"].tolist()


def test_quoting_matches_the_release_byte_for_byte(written):
    # The release's form, e.g. "When do you use ""&"" instead of ""and""?"; this row is fixed by the
    # pinned output, so the bytes below are what write_demo_tsv writes, not what the test computes.
    path, _ = written
    line = (
        b'1454\t2538\t2539\t"When do you use ""its"" instead of ""it\'s"" in formal writing?"\t'
        b'"I am a beginner. How do I decide between ""principal"" and ""principle"" in formal writing?"\t0\n'
    )
    assert line in path.read_bytes()
    back = pd.read_csv(path, sep="\t", keep_default_na=False)
    assert back.loc[1454, "question1"] == 'When do you use "its" instead of "it\'s" in formal writing?'
    assert back.loc[1454, "question2"] == (
        'I am a beginner. How do I decide between "principal" and "principle" in formal writing?'
    )
    with open(path, newline="", encoding="utf-8") as f:
        row = next(r for r in csv.reader(f, delimiter="\t") if r[0] == "1454")
    assert row[3:5] == back.loc[1454, ["question1", "question2"]].tolist()


@pytest.mark.parametrize(("rows", "seed"), sorted(PINNED_SHA256))
def test_output_is_pinned(tmp_path, rows, seed):
    info = write_demo_tsv(tmp_path / "demo.tsv", rows=rows, seed=seed)
    assert sha256_file(tmp_path / "demo.tsv") == PINNED_SHA256[(rows, seed)]
    assert info["sha256"] == PINNED_SHA256[(rows, seed)]


def test_ids_and_qid_numbering(pairs):
    assert pairs["id"].tolist() == list(range(ROWS))
    assert (pairs.loc[0, "qid1"], pairs.loc[0, "qid2"]) == (1, 2)
    # New qids are handed out in order of first appearance, row by row, q1 before q2.
    order = np.empty(2 * ROWS, np.int64)
    order[0::2], order[1::2] = pairs["qid1"], pairs["qid2"]
    first_seen = pd.unique(order)
    assert np.array_equal(first_seen, np.arange(1, len(first_seen) + 1))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_duplicate_share(seed):
    share = generate_pairs(ROWS, seed=seed)["is_duplicate"].mean()
    assert 0.33 <= share <= 0.41
    assert set(generate_pairs(500, seed=seed)["is_duplicate"].unique()) == {0, 1}


def test_qids_identify_texts_and_recur(pairs, questions):
    qids = pd.concat([pairs["qid1"], pairs["qid2"]], ignore_index=True)
    table = pd.DataFrame({"qid": qids, "text": questions})
    assert table.groupby("text")["qid"].nunique().max() == 1
    assert table.groupby("qid")["text"].nunique().max() == 1
    counts = qids.value_counts()
    recurring = (counts > 1).mean()
    # About a fifth of distinct questions are asked again (24% at full size; the release: 21%).
    assert 0.15 <= recurring <= 0.35, recurring
    assert counts.max() >= 5
    # Recurring questions appear in both columns.
    assert pairs["qid1"].isin(pairs["qid2"]).any()


def test_word_length_distribution(questions):
    words = questions.str.split().str.len()
    assert 8 <= words.median() <= 12
    assert 25 <= words.quantile(0.99) <= 38
    assert words.min() >= 3
    assert words.max() >= 45  # a few long multi-sentence questions


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = write_demo_tsv(tmp_path / "a.tsv", rows=2000, seed=3)
    b = write_demo_tsv(tmp_path / "b.tsv", rows=2000, seed=3)
    c = write_demo_tsv(tmp_path / "c.tsv", rows=2000, seed=4)
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert c["sha256"] != a["sha256"]
    assert a["sha256"] == sha256_file(tmp_path / "a.tsv")


def test_pairs_are_never_identical_and_never_repeated(pairs):
    assert (pairs["question1"] != pairs["question2"]).all()
    unordered = pd.Series([
        (a, b) if a < b else (b, a) for a, b in zip(pairs["question1"], pairs["question2"])
    ])
    # No pair is asked twice, so no pair can carry two labels.
    assert not unordered.duplicated().any()


def test_non_duplicates_are_topically_close(pairs):
    shared = np.array([
        bool(content_words(a) & content_words(b))
        for a, b in zip(pairs["question1"], pairs["question2"])
    ])
    dup = pairs["is_duplicate"].to_numpy() == 1
    assert shared[~dup].mean() > 0.6
    assert shared[dup].mean() > 0.9


def test_word_overlap_alone_does_not_solve_it(pairs):
    jaccard = np.array([
        len(content_words(a) & content_words(b)) / max(1, len(content_words(a) | content_words(b)))
        for a, b in zip(pairs["question1"], pairs["question2"])
    ])
    dup = pairs["is_duplicate"].to_numpy() == 1
    assert jaccard[dup].mean() > jaccard[~dup].mean()
    # Many non-duplicates overlap more than a typical duplicate does (hard negatives).
    assert (jaccard[~dup] > np.median(jaccard[dup])).mean() > 0.1


def test_paraphrases_keep_the_filler(pairs):
    learn = re.compile(r"learn(?:ing)? (Python|Java|JavaScript|C\+\+|Ruby|Go|Rust|Swift|Kotlin)\b")
    same = changed = 0
    for q1, q2, label in pairs[["question1", "question2", "is_duplicate"]].itertuples(index=False):
        m1, m2 = learn.search(q1), learn.search(q2)
        if m1 and m2:
            if label == 1:
                assert m1.group(1) == m2.group(1), (q1, q2)
                same += 1
            elif m1.group(1) != m2.group(1):
                changed += 1
    assert same >= 5 and changed >= 5


def test_learn_python_and_capital_of_france_are_in_the_vocabulary():
    vocab = load_vocabulary()
    learn = vocab.intent("learn_lang")
    assert {"How do I learn {a}?", "What is the best way to learn {a}?",
            "How can I start learning {a}?"} <= set(learn.templates)
    assert "Python" in vocab.categories[learn.slot_a]
    capital = vocab.intent("capital")
    assert "What is the capital of {a}?" in capital.templates
    assert "France" in vocab.categories[capital.slot_a]
    assert sum(len(v) for v in vocab.categories.values()) >= 500


def test_vocabulary_comes_from_the_resource_files_and_is_loaded_once():
    vocab = load_vocabulary()
    assert load_vocabulary() is vocab
    intents = json.loads((resource_dir() / "intents.json").read_text(encoding="utf-8"))["intents"]
    assert [it.name for it in vocab.intents] == [it["name"] for it in intents]
    assert vocab.intent("learn_lang").templates == tuple(intents[0]["templates"])
    categories = json.loads((resource_dir() / "categories.json").read_text(encoding="utf-8"))["categories"]
    assert vocab.categories["confusable"][0] == tuple(categories["confusable"][0]) == ("affect", "effect")
    assert vocab.is_paired("confusable") and not vocab.is_paired("lang")


def _edited_copy(tmp_path: Path, name: str, edit) -> Path:
    root = tmp_path / "vocab"
    shutil.copytree(Path(str(resource_dir())), root)
    doc = json.loads((root / name).read_text(encoding="utf-8"))
    edit(doc)
    (root / name).write_text(json.dumps(doc), encoding="utf-8")
    return root


@pytest.mark.parametrize(("name", "edit", "message"), [
    ("categories.json", lambda d: d["categories"]["hlang"].append("Python"),
     "categories.hlang: 'Python' is also in categories.lang"),
    ("categories.json", lambda d: d["categories"].update(lang=["C", "Go"]), "categories.lang: needs at least 3 items"),
    ("intents.json", lambda d: d["intents"][0]["templates"].append("Learn {a} how"), "must end with '?'"),
    ("intents.json", lambda d: d["intents"][0]["templates"].append("How do I learn {b}?"), "exactly the slots ['a']"),
    ("intents.json", lambda d: d["intents"][0].update(slot_a="langs"), "unknown category 'langs'"),
    ("intents.json", lambda d: d["intents"][0].pop("group"), "intents.0.group: Field required"),
    ("modifiers.json", lambda d: d["modifiers"].pop("learn"), "unknown modifier list 'learn'"),
    ("contexts.json", lambda d: d["short_families"][0].update(weight=0.5), "weights must sum to 1"),
])
def test_broken_vocabulary_is_refused_naming_file_and_field(tmp_path, name, edit, message):
    root = _edited_copy(tmp_path, name, edit)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_vocabulary(root)
    blamed = "intents.json" if name == "modifiers.json" else name
    assert str(err.value).startswith(str(root / blamed) + ": ")


def test_unedited_copy_of_the_vocabulary_loads_equal(tmp_path):
    root = _edited_copy(tmp_path, "intents.json", lambda d: None)
    assert load_vocabulary(root) == load_vocabulary()


def test_vocabulary_is_realistic(questions):
    words = {w.lower().strip('?.,:"') for text in questions for w in text.split()}
    assert len(words) >= 1500
    assert questions.nunique() >= 0.5 * len(questions)


def test_single_row():
    df = generate_pairs(1, seed=0)
    assert len(df) == 1
    assert (df.loc[0, "id"], df.loc[0, "qid1"], df.loc[0, "qid2"]) == (0, 1, 2)


@pytest.mark.parametrize("rows", [0, -1, -404_290])
def test_rows_below_one_raise_config_error(tmp_path, rows):
    with pytest.raises(ConfigError):
        generate_pairs(rows)
    with pytest.raises(ConfigError):
        write_demo_tsv(tmp_path / "x.tsv", rows=rows)
    assert not (tmp_path / "x.tsv").exists()


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_bad_seed_raises_config_error(seed):
    with pytest.raises(ConfigError):
        generate_pairs(10, seed=seed)


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out" / "demo.tsv"
    write_demo_tsv(path, rows=300, seed=1)
    first = path.read_bytes()
    with pytest.raises(ConfigError):
        write_demo_tsv(path, rows=300, seed=-1)
    assert path.read_bytes() == first  # a failed write leaves the previous file whole
    second = write_demo_tsv(path, rows=500, seed=2)
    assert [p.name for p in path.parent.iterdir()] == ["demo.tsv"]
    assert second["rows"] == 500
    assert path.read_bytes().count(b"\n") == 501
    assert sha256_file(path) == second["sha256"]
