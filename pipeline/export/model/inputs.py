"""The inputs an export checks its graphs on: like the training data where it is known, valid token ids for
inputs that feed an ``Embedding``, standard normal otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np


def token_count(model: Any, index: int | None = None) -> int | None:
    """How many token ids a model input takes, if it feeds an ``Embedding`` (else None).

    ``index`` None: the model's only input, which reads token ids when the model's first layer is an
    ``Embedding`` or its dtype is an integer; the smallest ``input_dim`` among the model's Embeddings bounds the
    ids that are valid everywhere. With ``index`` (a model with several inputs): input ``index`` reads token ids
    when its dtype is an integer or an ``Embedding`` reads it directly, and those Embeddings bound its ids.
    """
    import keras

    from mcdrop.pipeline.export.model import keras_internals

    embeddings = [layer for layer in keras_internals.sublayers(model) if isinstance(layer, keras.layers.Embedding)]
    if index is None:
        first = next((layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), None)
        integer_input = np.dtype(str(model.inputs[0].dtype)).kind in "iu"
        if not (integer_input or isinstance(first, keras.layers.Embedding)):
            return None
        return min((int(layer.input_dim) for layer in embeddings), default=2)
    tensor = model.inputs[index]
    readers = [layer for layer in embeddings if any(_reads(node, tensor) for node in layer._inbound_nodes)]
    if not readers and np.dtype(str(tensor.dtype)).kind not in "iu":
        return None
    return min((int(layer.input_dim) for layer in readers or embeddings), default=2)


def _reads(node: Any, tensor: Any) -> bool:
    return any(t is tensor for t in getattr(node, "input_tensors", ()))


def check_inputs(
    model: Any, inputs: list[Any], training: dict[str, Any] | None, rows: int, seed: int
) -> dict[str, np.ndarray]:
    """``rows`` float32 rows of every model input (``signature.ModelInput``s), by graph input name, for
    verification and the fingerprint."""
    rng = np.random.default_rng(seed)
    if len(inputs) == 1:
        return {inputs[0].name: _draw(rng, (rows, *inputs[0].row_shape), token_count(model),
                                      (training or {}).get("preprocessing", {}))}  # fmt: skip
    per_input = ((training or {}).get("preprocessing", {}) or {}).get("inputs", {}) or {}
    return {
        spec.name: _draw(rng, (rows, *spec.row_shape), token_count(model, i), per_input.get(spec.name, {}))
        for i, spec in enumerate(inputs)
    }


def _draw(rng: np.random.Generator, shape: tuple[int, ...], tokens: int | None, stats: Any) -> np.ndarray:
    if tokens is not None:
        return rng.integers(0, tokens, size=shape).astype(np.float32)
    row_shape = shape[1:]
    mean, std = (stats.get("x_mean"), stats.get("x_std")) if isinstance(stats, dict) else (None, None)
    if mean is not None and std is not None and np.asarray(mean).size == int(np.prod(row_shape)):
        mean_a = np.asarray(mean, np.float32).reshape(row_shape)
        std_a = np.asarray(std, np.float32).reshape(row_shape)
        return (mean_a + std_a * rng.standard_normal(shape)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)
