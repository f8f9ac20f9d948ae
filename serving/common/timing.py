"""Timing helpers for every measurement mcdrop makes (bench, soak, the export's timing record): call times and
percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

__all__ = ["call_times_ms", "percentile"]


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
