"""Run one bad-input case in a fork()ed child with a time limit, and classify what happened.

Forking from a process that already imported mxnet and binmx costs milliseconds, so every case
gets its own process: a crash (a signal, an abort from a sanitizer) or a hang (past the time
limit) is attributed to that case alone and never takes the test run down. binmx runs its
ParallelFor inline in a forked child (src/xnor_gemm/parallel.cc), as MXNet does.

A case is a callable returning a value (pickled back to the parent) or raising. The parent
turns that into an :class:`Outcome`: ``ok`` (returned), ``error`` (raised; the message),
``crash`` (the child died without answering: signal or exit status) or ``hang``.
Suites count outcomes per kind and decide, case by case, what is right (a clear error, or an
exact result) -- see :func:`classify`.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "Tally", "classify", "last_line", "run_forked"]


@dataclass
class Outcome:
    kind: str  # "ok", "error", "crash" or "hang"
    detail: str = ""  # error type and message; signal or exit status
    value: Any = None


def last_line(text: str) -> str:
    """The last meaningful line of a message (MXNetError puts its own text last)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(("Stack trace", "[bt]", "File ", "Traceback")):
            return ln
    return lines[-1] if lines else ""


def run_forked(fn: Callable[[], Any], timeout: float = 60.0) -> Outcome:
    """``fn()`` in a fork()ed child, killed after ``timeout`` seconds."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: answer through the pipe, never return into pytest
        code = 0
        try:
            os.close(r)
            try:
                payload: tuple[str, str, Any] = ("ok", "", fn())
            except BaseException as exc:
                payload = ("error", f"{type(exc).__name__}: {exc}", None)
            try:
                data = pickle.dumps(payload)
            except Exception as exc:
                data = pickle.dumps(
                    (payload[0], f"{payload[1]} (value not picklable: {exc})", None)
                )
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    hung = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hung = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    if hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return Outcome("hang", f"no answer after {timeout:.0f} s")
    _, status = os.waitpid(pid, 0)
    if chunks and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        kind, detail, value = pickle.loads(b"".join(chunks))
        return Outcome(kind, detail, value)
    if os.WIFSIGNALED(status):
        return Outcome("crash", f"killed by signal {os.WTERMSIG(status)}")
    return Outcome("crash", f"exit status {os.WEXITSTATUS(status)} without an answer")


def classify(out: Outcome, needles: Iterable[str] | None) -> str:
    """``clear`` / ``wrong`` / ``crash`` / ``hang`` for a case that must fail with an error whose
    last line holds every needle (needles given), or must return True (needles None)."""
    if out.kind in ("crash", "hang"):
        return out.kind
    if needles is None:
        return "ok" if out.kind == "ok" and out.value is True else "wrong"
    if out.kind != "error":
        return "wrong"
    line = last_line(out.detail)
    unclear = ("bad_alloc", "unknown C++ exception", "Segmentation", "IndexError", "KeyError")
    if any(u in out.detail for u in unclear) or not all(n in line for n in needles):
        return "wrong"
    return "clear"


@dataclass
class Tally:
    """Counts per suite: tried / clear error / ok (exact result) / crash / hang / wrong."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"clear": 0, "ok": 0, "crash": 0, "hang": 0, "wrong": 0}
    )

    def add(self, verdict: str) -> None:
        self.counts[verdict] += 1

    @property
    def tried(self) -> int:
        return sum(self.counts.values())

    def line(self, suite: str) -> str:
        c = self.counts
        return (
            f"{suite}: tried {self.tried}, clear error {c['clear']}, exact result {c['ok']}, "
            f"crash {c['crash']}, hang {c['hang']}, wrong {c['wrong']}"
        )
