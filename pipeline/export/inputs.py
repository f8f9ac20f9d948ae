"""The inputs an export checks its graphs on: like the training data where it is known, valid token ids for
models that start with an ``Embedding``, standard normal otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np


def token_count(model: Any) -> int | None:
    """How many token ids the model's input takes, if it feeds an ``Embedding`` (else None).

    A model reads token ids when its first layer is an ``Embedding`` or its input dtype is an integer;
    the smallest ``input_dim`` among its Embeddings bounds the ids that are valid everywhere.
    """
    import keras

    from mcdrop.pipeline.export import keras_internals

    embeddings = [layer for layer in keras_internals.sublayers(model) if isinstance(layer, keras.layers.Embedding)]
    first = next((layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)), None)
    integer_input = np.dtype(str(model.inputs[0].dtype)).kind in "iu"
    if not (integer_input or isinstance(first, keras.layers.Embedding)):
        return None
    return min((int(layer.input_dim) for layer in embeddings), default=2)


def check_inputs(
    model: Any, row_shape: tuple[int, ...], training: dict[str, Any] | None, rows: int, seed: int
) -> np.ndarray:
    """``rows`` float32 inputs for verification and the fingerprint."""
    rng = np.random.default_rng(seed)
    shape = (rows, *row_shape)
    tokens = token_count(model)
    if tokens is not None:
        return rng.integers(0, tokens, size=shape).astype(np.float32)
    stats = (training or {}).get("preprocessing", {})
    mean, std = stats.get("x_mean"), stats.get("x_std")
    if mean is not None and std is not None and np.asarray(mean).size == int(np.prod(row_shape)):
        mean_a = np.asarray(mean, np.float32).reshape(row_shape)
        std_a = np.asarray(std, np.float32).reshape(row_shape)
        return (mean_a + std_a * rng.standard_normal(shape)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)
