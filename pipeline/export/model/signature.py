"""A Keras model's inputs and outputs as the exported graphs name and take them, and tracing it.

A single-input model's graphs take ``x``; a model with several inputs takes one per Keras input, named after it
(made an identifier). A single-output model's graphs return ``y``; several outputs keep the model's output names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model import keras_internals
from mcdrop.serving.errors import first_line


def flat_outputs(model: keras.Model, y: Any) -> list[Any]:
    """A model's outputs as a list in ``model.outputs`` order (dict outputs come back keyed)."""
    from keras import tree

    flat = tree.flatten(y)
    if len(flat) != len(model.outputs):
        raise ExportError(f"Model {model.name!r} returned {len(flat)} tensors. Expected {len(model.outputs)}.")
    return list(flat)


def packed(model: keras.Model, x: Sequence[Any]) -> Any:
    """Input tensors in ``model.inputs`` order, in the structure the model is called with (a tensor, list, dict)."""
    if len(x) == 1:
        return x[0]
    from keras import tree

    return tree.pack_sequence_as(getattr(model, "_inputs_struct", list(x)), list(x))


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One input of the model as the graphs take it."""

    name: str
    """The graphs' input name: ``x`` for a single-input model, else the Keras input's name (made an identifier)."""
    keras_name: str
    row_shape: tuple[int, ...]
    dtype: tf.DType
    """The model's own dtype (the graphs take float32 and cast to it)."""


def model_inputs(model: keras.Model) -> list[ModelInput]:
    """Every input of ``model`` in ``model.inputs`` order (the order ``forward`` takes them in)."""
    specs = input_specs(model)
    names = ["x"] if len(specs) == 1 else [_identifier(tensor.name) for tensor in model.inputs]
    _check_unique(model, "input", names)
    return [ModelInput(name, str(tensor.name), tuple(int(d) for d in spec.shape[1:]), spec.dtype)
            for name, tensor, spec in zip(names, model.inputs, specs, strict=True)]  # fmt: skip


def output_names(model: keras.Model) -> list[str]:
    """The graphs' output names in ``model.outputs`` order: ``y`` for one output, else the model's output names."""
    if len(model.outputs) == 1:
        return ["y"]
    names = [_identifier(name) for name in getattr(model, "output_names", None) or
             [f"output_{i}" for i in range(len(model.outputs))]]  # fmt: skip
    _check_unique(model, "output", names)
    return names


def _identifier(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0])
    return cleaned if cleaned and not cleaned[0].isdigit() else f"t_{cleaned}"


def _check_unique(model: keras.Model, what: str, names: list[str]) -> None:
    if len(set(names)) != len(names) or {"samples"} & set(names):
        raise ExportError(
            f"Model {model.name!r} has {what} names {names}. Expected unique names other than 'samples' (name the "
            f"Keras {what}s, e.g. keras.Input(..., name=...) or the output layers' name=)."
        )


def walkable(layer: Any) -> bool:
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and keras_internals.is_functional(layer)
    )


def trace(function: Callable[..., Any], specs: list[tf.TensorSpec], what: str) -> Any:
    """A concrete function, with any failure as one ``ExportError`` line (autograph off: no 'in user code' dumps)."""
    try:
        return tf.function(function, autograph=False).get_concrete_function(*specs)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{what} failed: {first_line(exc)}") from exc


def input_specs(model: keras.Model) -> list[tf.TensorSpec]:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ExportError(
            f"Model {model.name!r} has no known inputs. Expected a built Sequential or functional model "
            "(give Sequential models an Input layer or build them first)."
        )
    if not getattr(model, "outputs", None):
        raise ExportError(f"Model {model.name!r} has no known outputs. Expected a built model.")
    specs = []
    for tensor in inputs:
        shape = tuple(tensor.shape)
        if any(d is None for d in shape[1:]):
            where = "" if len(inputs) == 1 else f" {tensor.name!r}"
            raise ExportError(
                f"Model input{where} shape {shape} has unknown dimensions. Expected only the batch to be unknown."
            )
        specs.append(tf.TensorSpec([None, *shape[1:]], tf.as_dtype(tensor.dtype)))
    return specs
