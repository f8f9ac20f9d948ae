"""Deadlines as clients send them: none, or one so far away that no wait can take it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mcdrop.serving.grpc.status import deadline_of
from mcdrop.serving.models.pool import InterpreterPool


class _Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def test_a_deadline_centuries_away_is_none() -> None:
    """perf_analyzer's calls carry a deadline centuries away (further than Python's waits take: they once failed
    with "timestamp out of range for platform time_t", an INTERNAL error, whenever a call waited for an
    interpreter)."""
    assert deadline_of(_Context(1e12)) is None  # type: ignore[arg-type]
    assert deadline_of(_Context(None)) is None  # type: ignore[arg-type]
    began = time.monotonic()
    found = deadline_of(_Context(5.0))  # type: ignore[arg-type]
    assert found is not None and began + 4.9 < found < time.monotonic() + 5.1


def test_waiting_for_an_interpreter_takes_any_deadline(model_repository: Path) -> None:
    pool = InterpreterPool((model_repository / "digits" / "1" / "deterministic.tflite").read_bytes(), size=1,
                           threads=1)  # fmt: skip
    waited: list[float] = []
    with pool.lease():
        waiter = threading.Thread(target=lambda: waited.append(_lease_time(pool, time.monotonic() + 1e12)))
        waiter.start()
        time.sleep(0.2)
    waiter.join(10)
    assert waited and 0.1 < waited[0] < 5


def _lease_time(pool: InterpreterPool, deadline: float) -> float:
    began = time.monotonic()
    with pool.lease(deadline):
        return time.monotonic() - began
