"""How far a quantised variant's outputs move from float32's on the same rows (and the same masks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mcdrop.pipeline.export.verify.common import run_graph
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import Task

__all__ = ["agreements", "masked_means"]


def agreements(
    reference: Sequence[np.ndarray], other: Sequence[np.ndarray], tasks: Sequence[Task], names: Sequence[str]
) -> dict[str, Any]:
    """How far ``other`` is from ``reference``: one record for a single output, else one per output name."""
    records = {name: _agreement(a, b, task) for name, a, b, task in zip(names, reference, other, tasks, strict=True)}
    return next(iter(records.values())) if len(names) == 1 else records


def _agreement(reference: np.ndarray, other: np.ndarray, task: Task) -> dict[str, float]:
    diff = np.abs(other.astype(np.float64) - reference)
    result = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    if task == Task.CLASSIFICATION:
        result["top1_agreement"] = float(np.mean(reference.argmax(-1) == other.argmax(-1)))
    return result


def masked_means(
    graph: Graph, x: dict[str, np.ndarray], feeds: dict[str, np.ndarray], chunk: int, names: list[str]
) -> list[np.ndarray]:
    """The MC mean of every output of an mc_masked graph over ``feeds``, in invokes of ``chunk`` samples."""
    samples = next(iter(feeds.values())).shape[0]
    parts = [
        run_graph(graph, {**x, **{n: f[start : start + chunk] for n, f in feeds.items()}}, names)
        for start in range(0, samples, chunk)
    ]
    return [np.asarray(np.concatenate([part[i] for part in parts]).mean(axis=0)) for i in range(len(names))]
