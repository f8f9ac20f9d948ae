"""How long one Monte-Carlo estimate takes through the exported graphs, recorded in the manifest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mcdrop.serving.common.timing import call_times_ms, percentile
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import GraphName

__all__ = ["TIMING_BUDGET_MS", "timing"]

TIMING_BUDGET_MS = 3000.0
"""About how long each measurement may take (a real-size model's T passes take seconds each)."""


def timing(
    graphs: dict[str, Graph], stochastic: bool, row_shapes: dict[str, tuple[int, ...]], samples: int, chunk: int
) -> dict[str, Any]:
    """Median ms of one MC estimate (T samples, batch 1; invokes of ``chunk`` samples) vs T deterministic invokes."""
    x = {name: np.zeros((1, *row_shape), np.float32) for name, row_shape in row_shapes.items()}

    def median_ms(fn: Callable[[], object], repeats: int = 15) -> float:
        return round(percentile(call_times_ms(fn, repeats), 50), 4)

    def repeats_within(ms: float, at_most: int) -> int:
        return max(1, min(at_most, int(TIMING_BUDGET_MS / max(ms, 1e-3))))

    deterministic = graphs[GraphName.DETERMINISTIC]
    result: dict[str, Any] = {"samples": samples, "batch": 1, "threads": 1}
    one = result["deterministic_x1_ms"] = median_ms(lambda: deterministic.run(x))
    result[f"deterministic_x{samples}_separate_ms"] = median_ms(
        lambda: [deterministic.run(x) for _ in range(samples)], repeats=repeats_within(one * samples, 5)
    )
    if stochastic:
        mc = graphs[GraphName.MC]
        sizes = [np.array(min(chunk, samples - start), np.int32) for start in range(0, samples, chunk)]
        key = f"mc_one_invoke_T{samples}_ms" if len(sizes) == 1 else f"mc_T{samples}_in_{len(sizes)}_invokes_ms"
        result[key] = median_ms(lambda: [mc.run({**x, "samples": t}) for t in sizes], repeats_within(one * 20, 15))
    return result
