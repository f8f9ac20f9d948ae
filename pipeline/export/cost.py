"""How much compute a model needs per input row: the prefix before the first dropout, and each sample after it.

Counts 2 x multiply-adds of Dense and convolution layers (the rest is negligible), in
layer order, switching from "prefix" to "per sample" at the first dropout-family layer.
Recorded in the manifest; the server bounds a request's cost with ``mcdrop.serving.manifest.request_flops``.
"""

from __future__ import annotations

import math
from typing import Any


def flops_per_row(model: Any) -> dict[str, float]:
    """``{"prefix": ..., "per_sample": ...}`` FLOPs for one input row."""
    totals = {"prefix": 0.0, "per_sample": 0.0}
    _walk(model, totals, sampled=[False])
    return totals


def _walk(model: Any, totals: dict[str, float], sampled: list[bool]) -> None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _walk(layer, totals, sampled)
            continue
        if isinstance(layer, keras.layers.Dropout | keras.layers.GaussianDropout):
            sampled[0] = True
            continue
        flops = 0.0
        if isinstance(layer, keras.layers.Dense):
            flops = 2.0 * math.prod(layer.kernel.shape) * math.prod(layer.output.shape[1:-1] or [1])
        elif isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.Conv3D):
            spatial = math.prod(d for d in layer.output.shape[1:-1] if d)
            flops = 2.0 * spatial * math.prod(layer.kernel.shape)
        totals["per_sample" if sampled[0] else "prefix"] += flops
