"""The private Keras APIs the export relies on, in one place, checked before use.

Rewriting a model's forward pass layer by layer (``mcdrop.pipeline.export.graphs.forward``)
needs three things public Keras does not offer:

* ``Function._run_through_graph(inputs, operation_fn)``: run a functional model's graph,
  calling every operation through our own function;
* ``_nodes_by_depth``: present on functional models (how we tell them from subclassed ones);
* ``Layer._call_context_args``: whether a layer takes the ``training`` call-context argument;
* ``Layer._flatten_layers``: every sublayer of a layer, however deeply nested (RNN cells,
  ``MultiHeadAttention``'s dropout, a custom layer's sublayers);
* ``keras.src.backend.random``: the module every Keras random draw goes through, and
  ``DropoutRNNCell.get_dropout_mask`` / ``get_recurrent_dropout_mask``, where RNN cells draw
  their per-sequence masks (``mcdrop.pipeline.export.model.random_calls`` intercepts both);
* ``Sequential._functional``: the graph a ``Sequential`` runs through.

They are stable across the Keras range in ``pyproject.toml`` (``SUPPORTED_KERAS``); on a Keras
without them the export stops with ``ExportError`` naming what is missing and the range to
install, instead of an ``AttributeError`` from deep inside a traced function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import keras

from mcdrop.pipeline.export.errors import ExportError

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
    if not callable(getattr(keras.layers.Layer, "_flatten_layers", None)):
        missing.append("Layer._flatten_layers")
    module = backend_random_module()
    if module is None or not callable(getattr(module, "dropout", None)):
        missing.append("keras.src.backend.random.dropout")
    cell = _dropout_rnn_cell_class()
    if cell is None or not all(hasattr(cell, m) for m in ("get_dropout_mask", "get_recurrent_dropout_mask")):
        missing.append("DropoutRNNCell.get_dropout_mask/get_recurrent_dropout_mask")
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


def backend_random_module() -> ModuleType | Any:
    """The backend module every Keras random function calls (``keras.src.backend.random``)."""
    try:
        from keras.src import backend
    except ImportError:
        return None
    return getattr(backend, "random", None)


def sequential_graph(layer: Any) -> Any:
    """The functional graph a built ``Sequential`` runs through (None for other layers)."""
    return getattr(layer, "_functional", None) if isinstance(layer, keras.Sequential) else None


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """``layer`` and every layer nested in it, at any depth."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


@contextlib.contextmanager
def unrolled_rnns(layer: keras.layers.Layer) -> Iterator[None]:
    """Unroll every RNN in ``layer`` while the block runs.

    Keras runs an RNN as a ``tf.while_loop`` over TensorLists, which the builtin-only converter
    cannot lower when the batch is dynamic (``TensorListReserve`` needs a static element shape),
    and Keras 3 does not mark LSTMs for TFLite's fused LSTM op. Unrolled over its (static) time
    steps, an RNN is plain matmuls and activations, and its per-sequence dropout masks are
    ordinary tensors reused at every step.
    """
    rnns = [sub for sub in sublayers(layer) if isinstance(sub, keras.layers.RNN) and not sub.unroll]
    for rnn in rnns:
        rnn.unroll = True
    try:
        yield
    finally:
        for rnn in rnns:
            rnn.unroll = False


@contextlib.contextmanager
def batch_norm_frozen(layer: keras.layers.Layer) -> Iterator[None]:
    """Keep ``BatchNormalization`` on its moving statistics while ``layer`` is called in training mode
    (Keras normalises with batch statistics only when ``training and trainable``)."""
    norms = [sub for sub in sublayers(layer) if isinstance(sub, keras.layers.BatchNormalization) and sub.trainable]
    for norm in norms:
        norm.trainable = False
    try:
        yield
    finally:
        for norm in norms:
            norm.trainable = True


def _dropout_rnn_cell_class() -> Any:
    try:
        from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell
    except ImportError:
        return None
    return DropoutRNNCell
