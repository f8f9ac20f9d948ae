"""The representative dataset of full-integer quantization: real rows through each graph's own inputs.

The converter runs the float graph on every step and records each tensor's range; int8 scales come from those
ranges. A step feeds ``BATCH`` rows (a static graph: its own B), ``SAMPLES`` Monte-Carlo samples where the graph
takes a ``samples`` input (a static graph: its own T) and freshly drawn masks where it takes masks, so the ranges
are those of thinned networks, as served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mcdrop.pipeline.export.convert.shapes import Shape
from mcdrop.pipeline.export.convert.tflite import Representative
from mcdrop.pipeline.export.model.sites import DropoutSite, draw_feeds

__all__ = ["BATCH", "ROWS", "SAMPLES", "dataset"]

ROWS = 256
"""Rows of the representative dataset (TensorFlow suggests a few hundred)."""
BATCH = 8
SAMPLES = 4


def dataset(function: Any, rows: dict[str, np.ndarray], sites: list[DropoutSite], shape: Shape,
            seed: int) -> Representative:  # fmt: skip
    """Steps for ``function`` (a concrete graph function) from ``rows`` (by graph input name)."""
    specs = list(function.structured_input_signature[0])
    count = len(next(iter(rows.values())))
    batch = shape.batch or BATCH
    samples = shape.samples or SAMPLES
    by_feed = {site.feed_name: site for site in sites}

    def steps() -> Iterator[list[Any]]:
        rng = np.random.default_rng(seed)
        for start in range(0, min(count, ROWS), batch):
            index = np.arange(start, start + batch) % count  # a static batch wraps around the last rows
            masks = draw_feeds(sites, samples, batch, rng) if sites else {}
            step: list[Any] = []
            for spec in specs:
                if spec.name in rows:
                    step.append(rows[spec.name][index])
                elif spec.name == "samples":
                    step.append(np.array(samples, np.int32))
                elif spec.name in by_feed:
                    step.append(masks[spec.name])
                else:
                    raise ValueError(f"No representative values for graph input {spec.name!r}.")
            yield step

    return steps
