"""Small measuring helpers shared by bench, soak and the tests: percentiles and a process's memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from mcdrop.serving.errors import MCDropError


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics; NaN if empty."""
    array = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(array, q)) if array.size else float("nan")


def call_times_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall time in ms of each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def memory_mb(pid: int) -> dict[str, float]:
    """Resident set size now (``rss``) and its peak so far (``peak``) of a Linux process, in MiB.

    Raises:
        MCDropError: the process is gone or ``/proc`` does not report it.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MCDropError(f"Cannot read the memory of process {pid}: {exc}") from None
    fields = {line.split(":")[0]: line.split()[1] for line in lines if line.startswith(("VmRSS:", "VmHWM:"))}
    if set(fields) != {"VmRSS", "VmHWM"}:
        raise MCDropError(f"/proc/{pid}/status reports no VmRSS/VmHWM")
    return {"rss": int(fields["VmRSS"]) / 1024, "peak": int(fields["VmHWM"]) / 1024}
