"""The private Keras APIs the export relies on, in one place, checked before use.

Rewriting a model's forward pass layer by layer (``mcdrop.pipeline.export.stochastic``)
needs three things public Keras does not offer:

* ``Function._run_through_graph(inputs, operation_fn)``: run a functional model's graph,
  calling every operation through our own function;
* ``_nodes_by_depth``: present on functional models (how we tell them from subclassed ones);
* ``Layer._call_context_args``: whether a layer takes the ``training`` call-context argument.

They are stable across the Keras range in ``pyproject.toml`` (``SUPPORTED_KERAS``); on a Keras
without them the export stops with ``ExportError`` naming what is missing and the range to
install, instead of an ``AttributeError`` from deep inside a traced function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from mcdrop.serving.errors import ExportError

SUPPORTED_KERAS = ">=3.15.1,<3.16"


def check_supported() -> None:
    """Raise ``ExportError`` unless this Keras has every private API the export uses."""
    missing = []
    function_class = _function_class()
    if function_class is None or not callable(getattr(function_class, "_run_through_graph", None)):
        missing.append("keras.src.ops.function.Function._run_through_graph")
    try:
        has_context_args = hasattr(keras.layers.Identity(), "_call_context_args")
    except AttributeError:  # a Keras whose own layers expect it differently
        has_context_args = False
    if not has_context_args:
        missing.append("Layer._call_context_args")
    if missing:
        raise ExportError(
            f"keras {keras.__version__} lacks internals mcdrop's export needs ({', '.join(missing)}). "
            f"Supported: keras{SUPPORTED_KERAS}. Install it with: pip install 'keras{SUPPORTED_KERAS}'"
        )


def is_functional(model: keras.Model) -> bool:
    """A functional model (or a Sequential's underlying graph): one whose layer graph can be walked."""
    return hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth")


def run_through_graph(model: keras.Model, inputs: Any, operation_fn: Callable[[Any], Callable[..., Any]]) -> Any:
    """Run a functional model on ``inputs``, calling each operation ``op`` as ``operation_fn(op)(*args, **kwargs)``."""
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def takes_training_argument(layer: Any) -> bool:
    """Whether ``layer`` receives the ``training`` call-context argument (dropout, batch norm, nested models)."""
    return "training" in getattr(layer, "_call_context_args", ())


def _function_class() -> Any:
    try:
        from keras.src.ops.function import Function
    except ImportError:
        return None
    return Function
