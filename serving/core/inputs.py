"""Checks of a request's input against its model version: shape, batch, dtype, finiteness, token ids."""

from __future__ import annotations

from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.repository import ModelVersion

__all__ = ["checked_input"]


def checked_input(version: ModelVersion, x: np.ndarray, max_batch: int | None) -> np.ndarray:
    """``x`` with its shape and batch checked, converted to the model's input dtype, finite, contiguous.

    Raises:
        InvalidArgument: naming what was expected and what was received.
    """
    expected = version.input_shape
    shown = "[B, " + ", ".join(str(d) for d in expected[1:]) + "]"
    if x.ndim != len(expected) or tuple(x.shape[1:]) != expected[1:]:
        raise InvalidArgument(
            f"Invalid input shape for model {version.name!r}. Expected {shown}. Received: {list(x.shape)}"
        )
    if len(x) < 1 or (max_batch is not None and len(x) > max_batch):
        bound = f"1 <= B <= {max_batch}" if max_batch is not None else "B >= 1"
        raise InvalidArgument(f"Invalid batch size. Expected {bound}. Received: {len(x)}")
    x = _converted(x, np.dtype(version.input_dtype), version.name)
    finite = np.isfinite(x)
    if not finite.all():
        first = [int(i) for i in np.argwhere(~finite)[0]]
        raise InvalidArgument(
            f"Input contains {int((~finite).sum())} NaN/Inf value(s), first at index {first}. Expected finite numbers."
        )
    if version.integer_range is not None:
        _check_token_ids(x, version.integer_range, version.name)
    return np.ascontiguousarray(x)


def _check_token_ids(x: np.ndarray, bounds: tuple[int, int], model: str) -> None:
    low, high = bounds
    bad = (x != np.round(x)) | (x < low) | (x > high)
    if bad.any():
        first = [int(i) for i in np.argwhere(bad)[0]]
        raise InvalidArgument(
            f"Input value {x[tuple(first)].item()!r} at index {first} is not a token id of model {model!r}. "
            f"Expected whole numbers in [{low}, {high}]."
        )


def _converted(x: np.ndarray, dtype: np.dtype[Any], model: str) -> np.ndarray:
    """``x`` as the model's input dtype: numbers of any width convert (float64 → float32 rounds); values
    outside the target's range are refused rather than turned into Inf."""
    if x.dtype == dtype:
        return x
    if x.dtype.kind not in "fiu" or dtype.kind != "f":
        raise InvalidArgument(
            f"Invalid input dtype for model {model!r}. Expected {dtype.name.upper()} or another numeric type. "
            f"Received: {x.dtype.name.upper()}"
        )
    with np.errstate(over="ignore"):
        converted = x.astype(dtype)
    overflow = ~np.isfinite(converted) & np.isfinite(x)
    if overflow.any():
        first = [int(i) for i in np.argwhere(overflow)[0]]
        raise InvalidArgument(
            f"Input value {x[tuple(first)].item()!r} at index {first} is outside the {dtype.name} range of model "
            f"{model!r}. Expected |x| <= {float(np.finfo(dtype).max):.6g}."
        )
    return converted
