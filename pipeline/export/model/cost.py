"""How much compute a model needs per input row: the prefix before the first dropout, and each sample after it.

Counts 2 x multiply-adds of the layers that hold nearly all of it — Dense, EinsumDense, convolutions
(also depthwise and separable, as in MobileNet and EfficientNet), RNN cells (per time step) and attention
scores — in layer order, switching from "prefix" to "per sample" at the first layer that owns dropout.
Recorded in the manifest; the server bounds a request's cost with ``mcdrop.serving.models.manifest.request_flops``.
"""

from __future__ import annotations

import math
from typing import Any


def flops_per_row(model: Any, owners: set[str]) -> dict[str, float]:
    """``{"prefix": ..., "per_sample": ...}`` FLOPs for one input row; ``owners`` are the paths of the layers
    that own dropout (``DropoutSite.owner``)."""
    totals = {"prefix": 0.0, "per_sample": 0.0}
    _walk(model, "", owners, totals, sampled=[False])
    return totals


def _walk(model: Any, prefix: str, owners: set[str], totals: dict[str, float], sampled: list[bool]) -> None:
    import keras

    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model) and any(o.startswith(f"{path}/") for o in owners):
            _walk(layer, f"{path}/", owners, totals, sampled)
            continue
        if path in owners:
            sampled[0] = True
        totals["per_sample" if sampled[0] else "prefix"] += layer_flops(layer)


def layer_flops(layer: Any) -> float:
    """Approximate FLOPs of one row through ``layer`` and everything nested in it."""
    import keras

    from mcdrop.pipeline.export.model import keras_internals

    total = 0.0
    for sub in keras_internals.sublayers(layer):
        if isinstance(sub, keras.layers.Dense | keras.layers.EinsumDense):
            output = _output_shape(sub)
            positions = int(output[0] or 1) if len(output) > 1 else 1  # a sequence: the kernel runs per position
            total += 2.0 * math.prod(sub.kernel.shape) * positions
        elif isinstance(sub, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.Conv3D):
            total += 2.0 * math.prod(d for d in _output_shape(sub)[:-1] if d) * math.prod(sub.kernel.shape)
        elif isinstance(sub, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
            # kernel [k..., channels, multiplier]: each output position reads k... inputs per output channel
            total += 2.0 * math.prod(d for d in _output_shape(sub)[:-1] if d) * math.prod(sub.kernel.shape)
        elif isinstance(sub, keras.layers.SeparableConv1D | keras.layers.SeparableConv2D):
            positions = math.prod(d for d in _output_shape(sub)[:-1] if d)
            total += 2.0 * positions * (math.prod(sub.depthwise_kernel.shape) + math.prod(sub.pointwise_kernel.shape))
        elif isinstance(sub, keras.layers.RNN):
            steps = _steps(sub) or _steps(layer) or 1  # a Bidirectional's inner RNNs have no input of their own
            cell = sub.cell
            weights = (getattr(cell, name, None) for name in ("kernel", "recurrent_kernel"))
            total += 2.0 * steps * sum(float(math.prod(w.shape)) for w in weights if w is not None)
        elif isinstance(sub, keras.layers.MultiHeadAttention):
            query, key = _mha_lengths(sub)
            total += 2.0 * 2 * sub.num_heads * sub.key_dim * query * key  # scores and weighted values
    return total


def _output_shape(layer: Any) -> tuple[Any, ...]:
    try:
        return tuple(layer.output.shape[1:])
    except (AttributeError, ValueError):
        return ()


def _steps(layer: Any) -> int | None:
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        return None
    return int(shape[1]) if len(shape) > 2 and shape[1] else None


def _mha_lengths(layer: Any) -> tuple[int, int]:
    query = getattr(layer, "_query_shape", None)
    key = getattr(layer, "_key_shape", None) or getattr(layer, "_value_shape", None)
    return int((query or (0, 1))[1] or 1), int((key or (0, 1))[1] or 1)
