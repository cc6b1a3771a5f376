"""TensorFlow thread defaults: two inter-op threads, the CPUs split between them; the user's choice wins."""

from __future__ import annotations

import pytest

from qdup.runtime import INTER, INTRA, apply_tf_thread_defaults, tf_thread_defaults


@pytest.mark.parametrize(("cpus", "intra"), [(1, "1"), (2, "1"), (3, "1"), (16, "8")])
def test_defaults_split_the_cpus_between_two_branches(cpus, intra):
    assert tf_thread_defaults(cpus) == {INTER: "2", INTRA: intra}


def test_the_environment_wins_over_the_defaults(monkeypatch):
    monkeypatch.setenv(INTRA, "3")
    monkeypatch.delenv(INTER, raising=False)
    assert apply_tf_thread_defaults(cpus=16) == {INTER: "2", INTRA: "3"}


def test_zero_cpus_is_refused():
    with pytest.raises(ValueError, match="cpus must be >= 1"):
        tf_thread_defaults(0)
