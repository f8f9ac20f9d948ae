"""Checks of a request's inputs against its model version: names, shapes, batch, dtype, finiteness, token ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.manifest import InputSpec
from mcdrop.serving.models.repository import ModelVersion

__all__ = ["checked_input", "checked_inputs"]


def checked_inputs(
    version: ModelVersion, x: np.ndarray | None, inputs: Mapping[str, np.ndarray] | None, max_batch: int | None
) -> dict[str, np.ndarray]:
    """Every model input by name (the manifest's order), each checked as ``checked_input``, with one batch size.

    A single-input model takes ``x`` (or ``inputs`` holding its one input); a model with several takes ``inputs``.

    Raises:
        InvalidArgument: a missing, unknown or misshapen input, named, with what was expected and what was received.
    """
    specs = version.inputs
    expected = [spec.name for spec in specs]
    if x is not None and inputs:
        raise InvalidArgument(f"Model {version.name!r} received both x and named inputs. Expected one of them.")
    if x is not None:
        if len(specs) > 1:
            raise InvalidArgument(
                f"Model {version.name!r} takes {len(specs)} named inputs {expected}. Received: one unnamed tensor "
                "(x); send each input by name."
            )
        inputs = {specs[0].name: x}
    if not inputs:
        raise InvalidArgument(f"Model {version.name!r} takes inputs {expected}. Received: none")
    received = list(inputs)
    if set(received) != set(expected):
        missing = [n for n in expected if n not in inputs]
        unknown = [n for n in received if n not in expected]
        raise InvalidArgument(
            f"Model {version.name!r} takes inputs {expected}. Received: {received}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {unknown})" if unknown else "")
        )
    several = len(specs) > 1
    checked = {spec.name: checked_input(version, spec, inputs[spec.name], max_batch, named=several) for spec in specs}
    batches = {name: len(value) for name, value in checked.items()}
    if len(set(batches.values())) > 1:
        shown = ", ".join(f"{name} {rows}" for name, rows in batches.items())
        raise InvalidArgument(
            f"Inputs of model {version.name!r} have different batch sizes ({shown}). "
            "Expected the same B for every input."
        )
    return checked


def checked_input(
    version: ModelVersion, spec: InputSpec, x: np.ndarray, max_batch: int | None, *, named: bool = False
) -> np.ndarray:
    """``x`` with its shape and batch checked, converted to the input's dtype, finite, contiguous.

    ``named``: say which input a message is about (a model with several).

    Raises:
        InvalidArgument: naming what was expected and what was received.
    """
    expected = spec.shape
    which = f" {spec.name!r}" if named else ""
    shown = "[B, " + ", ".join(str(d) for d in expected[1:]) + "]"
    if x.ndim != len(expected) or tuple(x.shape[1:]) != expected[1:]:
        label = f"for input{which} of model" if named else "for model"
        raise InvalidArgument(
            f"Invalid input shape {label} {version.name!r}. Expected {shown}. Received: {list(x.shape)}"
        )
    if len(x) < 1 or (max_batch is not None and len(x) > max_batch):
        bound = f"1 <= B <= {max_batch}" if max_batch is not None else "B >= 1"
        raise InvalidArgument(f"Invalid batch size{' of input' + which if named else ''}. Expected {bound}. "
                              f"Received: {len(x)}")  # fmt: skip
    x = _converted(x, np.dtype(spec.dtype), version.name, which)
    finite = np.isfinite(x)
    if not finite.all():
        first = [int(i) for i in np.argwhere(~finite)[0]]
        raise InvalidArgument(
            f"Input{which} contains {int((~finite).sum())} NaN/Inf value(s), first at index {first}. "
            "Expected finite numbers."
        )
    if spec.integer_range is not None:
        _check_token_ids(x, spec.integer_range, version.name, which)
    return np.ascontiguousarray(x)


def _check_token_ids(x: np.ndarray, bounds: tuple[int, int], model: str, which: str) -> None:
    low, high = bounds
    bad = (x != np.round(x)) | (x < low) | (x > high)
    if bad.any():
        first = [int(i) for i in np.argwhere(bad)[0]]
        where = f"of input{which} " if which else ""
        raise InvalidArgument(
            f"Input value {x[tuple(first)].item()!r} at index {first} {where}is not a token id of model {model!r}. "
            f"Expected whole numbers in [{low}, {high}]."
        )


def _converted(x: np.ndarray, dtype: np.dtype[Any], model: str, which: str) -> np.ndarray:
    """``x`` as the input's dtype: numbers of any width convert (float64 → float32 rounds); values
    outside the target's range are refused rather than turned into Inf."""
    if x.dtype == dtype:
        return x
    if x.dtype.kind not in "fiu" or dtype.kind != "f":
        label = f"for input{which} of model" if which else "for model"
        raise InvalidArgument(
            f"Invalid input dtype {label} {model!r}. Expected {dtype.name.upper()} or another numeric type. "
            f"Received: {x.dtype.name.upper()}"
        )
    with np.errstate(over="ignore"):
        converted = x.astype(dtype)
    overflow = ~np.isfinite(converted) & np.isfinite(x)
    if overflow.any():
        first = [int(i) for i in np.argwhere(overflow)[0]]
        where = f"of input{which} " if which else ""
        raise InvalidArgument(
            f"Input value {x[tuple(first)].item()!r} at index {first} {where}is outside the {dtype.name} range of "
            f"model {model!r}. Expected |x| <= {float(np.finfo(dtype).max):.6g}."
        )
    return converted
