"""A function run in a child process (qdup.childproc): its answer, log lines, events and failures reach the caller."""

from __future__ import annotations

import os
import signal

import pytest

from qdup.childproc import call_in_child
from qdup.errors import ConfigError, QdupError
from qdup.memory import peak_rss_bytes, reset_peak_rss


def _answers(log, emit, *, n: int) -> dict:
    for i in range(n):
        log(f"line {i}")
        emit(i, n, {"pid": os.getpid()})
    return {"sum": sum(range(n)), "pid": os.getpid(), "threads": os.environ.get("QDUP_TEST_CHILD_SETTING")}


def _fails(log, emit, *, message: str) -> None:
    log("about to fail")
    raise ConfigError(message)


def _unpicklable_failure(log, emit) -> None:
    class Local(Exception):  # a class the caller cannot unpickle
        pass

    raise Local("local trouble")


def _interrupted(log, emit) -> None:
    raise KeyboardInterrupt


def _dies(log, emit) -> None:
    log("dying")
    os.kill(os.getpid(), signal.SIGKILL)


def _allocates(log, emit, *, mib: int) -> int:
    block = bytearray(mib * 2**20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
    return len(block)


def test_answer_log_lines_and_events_reach_the_caller_in_order(monkeypatch):
    monkeypatch.setenv("QDUP_TEST_CHILD_SETTING", "inherited")
    lines, events = [], []
    result = call_in_child(_answers, {"n": 3}, log=lines.append, on_event=lambda *a: events.append(a))
    assert result["sum"] == 3 and result["pid"] != os.getpid()
    assert result["threads"] == "inherited"  # the environment (TensorFlow's thread settings) applies in the child
    assert lines == ["line 0", "line 1", "line 2"]
    assert [e[:2] for e in events] == [(0, 3), (1, 3), (2, 3)] and events[0][2]["pid"] == result["pid"]


def test_the_childs_error_is_raised_with_its_type_message_and_traceback():
    lines = []
    with pytest.raises(ConfigError, match="bad setting x") as caught:
        call_in_child(_fails, {"message": "bad setting x"}, log=lines.append, what="training process")
    assert lines == ["about to fail"]
    assert any("in the training process" in n and "_fails" in n for n in caught.value.__notes__)


def test_an_error_that_cannot_be_unpickled_arrives_as_its_text():
    with pytest.raises(QdupError, match="Local: local trouble"):
        call_in_child(_unpicklable_failure, {}, log=print)


def test_an_interrupt_in_the_child_interrupts_the_caller():
    with pytest.raises(KeyboardInterrupt):
        call_in_child(_interrupted, {}, log=print)


def test_a_child_killed_without_answering_is_a_one_line_error():
    lines = []
    with pytest.raises(QdupError, match=r"training process ended without an answer \(exit code -9\)"):
        call_in_child(_dies, {}, log=lines.append, what="training process")
    assert lines == ["dying"]


def test_the_childs_peak_memory_counts_in_the_callers_until_reset():
    if not reset_peak_rss():
        pytest.skip("no VmHWM reset on this system")
    before = peak_rss_bytes()
    call_in_child(_allocates, {"mib": 200}, log=print)
    assert peak_rss_bytes() - before >= 200 * 2**20
    reset_peak_rss()
    assert peak_rss_bytes() < before + 100 * 2**20
