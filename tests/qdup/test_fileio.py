"""Tests for qdup/fileio.py and qdup/paths.py: atomic writes, hashing, name validation."""

from __future__ import annotations

import os
import time

import pytest

from qdup.fileio import atomic_dir, atomic_write_json, clean_stale_temps, read_json, sha256_tree


def test_atomic_dir_is_invisible_until_complete_and_removed_on_error(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            assert not final.exists()
            raise RuntimeError("crash mid-write")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (final / "a.txt").read_text() == "a"


def test_atomic_dir_keeps_the_first_complete_copy(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("second")
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_write_json_round_trip_and_permissions(tmp_path):
    path = tmp_path / "x" / "a.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_tree_hash_changes_with_content_and_names(tmp_path):
    (tmp_path / "a").write_text("1")
    h1 = sha256_tree(tmp_path)
    (tmp_path / "a").write_text("2")
    h2 = sha256_tree(tmp_path)
    (tmp_path / "a").rename(tmp_path / "b")
    assert len({h1, h2, sha256_tree(tmp_path)}) == 3


def test_temps_are_cleaned_whatever_their_age_under_the_lock(tmp_path):
    old, new = tmp_path / ".x.tmp", tmp_path / ".y.tmp"
    old.mkdir()
    new.write_text("left by a run that died a moment ago")
    past = time.time() - 7200
    os.utime(old, (past, past))
    (tmp_path / "kept").write_text("not a temporary entry")
    assert sorted(clean_stale_temps(tmp_path)) == [old, new]
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
