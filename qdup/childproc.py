"""One function run in a fresh child process, its log lines and events forwarded to the caller as they come.

Why a child: what a library allocates outside Python's heap stays in the process that used it (TensorFlow keeps
gigabytes of native memory after training; malloc_trim cannot hand it back), so a stage that trains runs in a process
of its own and that memory leaves with it. The child is started with "spawn" (a fresh interpreter: no copy of the
parent's memory, no fork of its threads); it inherits the environment, so settings read from it at start-up (the
TensorFlow thread counts of `qdup.runtime`) apply there too.
"""

from __future__ import annotations

import multiprocessing
import pickle
import traceback
from collections.abc import Callable
from typing import Any

from qdup.errors import QdupError
from qdup.log import LogFn
from qdup.memory import note_child_peak, peak_rss_bytes

# Seconds a child is given to end by itself after the caller was interrupted (Ctrl-C reaches the whole process group,
# so the child is stopping too, and lets its last checkpoint finish), before it is terminated.
STOP_GRACE_S = 30.0

# fn(log, emit, **kwargs): `log(message)` reaches the caller's log, `emit(*args)` the caller's `on_event(*args)`.
ChildFn = Callable[..., Any]


def _child_main(conn: Any, fn: ChildFn, kwargs: dict[str, Any]) -> None:
    def log(message: str) -> None:
        conn.send(("log", message))

    def emit(*args: Any) -> None:
        conn.send(("event", args))

    try:
        result = fn(log, emit, **kwargs)
        conn.send(("ok", result, peak_rss_bytes()))
    except BaseException as error:  # every failure, KeyboardInterrupt included, goes back to the caller
        text = traceback.format_exc()
        try:
            payload = pickle.dumps(error)
            pickle.loads(payload)
        except Exception:  # an exception that does not survive pickling is sent as its type and text
            payload = None
        conn.send(("error", payload, f"{type(error).__name__}: {error}", text, peak_rss_bytes()))
    finally:
        conn.close()


def call_in_child(fn: ChildFn, kwargs: dict[str, Any], *, log: LogFn, on_event: Callable[..., None] | None = None,
                  what: str = "child process") -> Any:
    """`fn(log, emit, **kwargs)` in a spawned child process; its return value (pickled back).

    Its log lines and events reach `log` and `on_event` here while it runs. Its exception is raised here, of its own
    type and message, with the child's traceback as a note; a child that dies without answering (killed, out of memory)
    raises QdupError with its exit code. Interrupted here (KeyboardInterrupt), the child is given STOP_GRACE_S to stop,
    then terminated, and the interrupt goes on. The child's peak RSS is added to this process's (`qdup.memory`).
    `fn` and `kwargs` must be picklable (`fn` a module-level function).
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, fn, kwargs), name=what)
    process.start()
    sender.close()  # the child holds the only sending end: its exit ends the pipe
    try:
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                process.join()
                raise QdupError(f"the {what} ended without an answer (exit code {process.exitcode}); "
                                "run again to resume from its last checkpoint") from None
            kind = message[0]
            if kind == "log":
                log(message[1])
            elif kind == "event":
                if on_event is not None:
                    on_event(*message[1])
            elif kind == "ok":
                note_child_peak(message[2])
                return message[1]
            else:
                _, payload, summary, text, peak = message
                note_child_peak(peak)
                error = pickle.loads(payload) if payload is not None else QdupError(f"{what} failed: {summary}")
                error.add_note(f"in the {what}:\n{text.rstrip()}")
                process.join()  # it ends by itself once it has answered
                raise error
    except KeyboardInterrupt:
        process.join(STOP_GRACE_S)
        raise
    finally:
        if process.is_alive():  # the caller failed (its log or event hook) or was interrupted: the child stops too
            process.terminate()
        process.join()
        receiver.close()
