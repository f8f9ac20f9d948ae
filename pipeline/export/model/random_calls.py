"""See every random number a Keras model draws, and decide what each draw returns.

Keras 3 layers draw all their randomness through a handful of functions of the
backend's random module (``dropout``, ``normal``, ``uniform``, …): the ``Dropout``
family, the input and recurrent masks of RNN cells, ``MultiHeadAttention``'s
attention dropout, a custom layer's ``Dropout`` sublayer or its own
``keras.random.dropout`` call. ``intercepted(handler)`` replaces those functions
while a model is traced, so every draw becomes a ``RandomCall`` — which function,
which layers are on the call stack, whether an RNN cell draws its input or its
recurrent mask — and the handler returns what the traced graph gets instead.

TensorFlow's own random ops (``tf.random.uniform`` in a custom layer) bypass Keras;
``foreign_random_ops`` finds them in a traced graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import keras
import tensorflow as tf

from mcdrop.pipeline.export.model import keras_internals

FUNCTIONS = ("dropout", "normal", "uniform", "truncated_normal", "categorical", "randint", "shuffle", "gamma",
             "binomial", "beta")  # fmt: skip

# An RNN cell draws its masks in these methods of keras's DropoutRNNCell.
_RNN_MASK_METHODS = {"get_dropout_mask": "input", "get_recurrent_dropout_mask": "recurrent"}

_TF_RANDOM_OP = re.compile(r"Random|Multinomial|TruncatedNormal|^Rng|StatefulUniform|StatefulStandardNormal")


@dataclasses.dataclass
class RandomCall:
    """One call of a Keras random function while a model was traced."""

    function: str
    arguments: dict[str, Any]
    layers: list[keras.layers.Layer]
    """The layers being called when it happened, outermost first (the traced root model excluded)."""
    rnn_mask: str | None
    """``input`` or ``recurrent`` when an RNN cell draws one of its dropout masks."""

    @property
    def layer(self) -> keras.layers.Layer | None:
        return self.layers[-1] if self.layers else None

    def neutral(self) -> Any:
        """A value of the right shape that involves no random op: the identity for the dropout family."""
        args = self.arguments
        if self.function == "dropout":
            return args["inputs"]
        if self.function == "shuffle":
            return args["x"]
        if self.function == "categorical":
            logits = tf.convert_to_tensor(args["logits"])
            return tf.zeros(tf.stack([tf.shape(logits)[0], args["num_samples"]]), dtype=args.get("dtype") or "int32")
        dtype = args.get("dtype") or ("int32" if self.function == "randint" else "float32")
        zeros = tf.zeros(_shape_tensor(args["shape"]), dtype=dtype)
        if self.function in ("normal", "truncated_normal"):
            return zeros + tf.cast(args.get("mean", 0.0), dtype)
        if self.function in ("uniform", "randint"):
            return zeros + tf.cast(args.get("minval", 0), dtype)
        return zeros


Handler = Callable[[RandomCall], Any]


@contextlib.contextmanager
def intercepted(handler: Handler, root: Any = None, prefix: tuple[keras.layers.Layer, ...] = ()) -> Iterator[None]:
    """Route every Keras random draw to ``handler`` while the block runs (tracing is single-threaded).

    Args:
        handler: gets each ``RandomCall`` and returns the tensor the caller receives.
        root: a model whose own frames are left out of ``RandomCall.layers``.
        prefix: layers put in front of the stack's layers (the enclosing models of a layer the caller
            calls directly, so that paths read the same as in a whole-model call).
    """
    module = keras_internals.backend_random_module()
    originals = {name: getattr(module, name) for name in FUNCTIONS if hasattr(module, name)}

    def replacement(name: str) -> Callable[..., Any]:
        signature = inspect.signature(originals[name])

        def draw(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            frame = inspect.currentframe()
            caller = frame.f_back if frame is not None else None
            layers, rnn_mask = _calling_layers(caller, root)
            return handler(RandomCall(name, dict(bound.arguments), [*prefix, *layers], rnn_mask))

        return draw

    for name in originals:
        setattr(module, name, replacement(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


def layer_path(layers: list[keras.layers.Layer]) -> str:
    return "/".join(layer.name for layer in layers)


def foreign_random_ops(graph: tf.Graph) -> list[tuple[str, str]]:
    """``(op type, name scope)`` of TensorFlow random ops in ``graph`` and the functions it calls."""
    graph_def = graph.as_graph_def()
    nodes = [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]
    found = []
    for node in nodes:
        if _TF_RANDOM_OP.search(node.op):
            scope = node.name.rsplit("/", 1)[0] if "/" in node.name else "(model)"
            found.append((node.op, scope))
    return found


def _calling_layers(frame: FrameType | None, root: Any) -> tuple[list[keras.layers.Layer], str | None]:
    layers: list[keras.layers.Layer] = []
    rnn_mask = None
    while frame is not None:
        if rnn_mask is None:  # the innermost of the two methods on the stack
            rnn_mask = _RNN_MASK_METHODS.get(frame.f_code.co_name)
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.layers.Layer) and not any(owner is layer for layer in layers):
            layers.append(owner)
        frame = frame.f_back
    layers.reverse()  # outermost first
    kept: list[keras.layers.Layer] = []
    for layer in layers:
        if layer is root or (root is not None and layer is keras_internals.sequential_graph(root)):
            continue
        if kept and layer is keras_internals.sequential_graph(kept[-1]):
            continue  # a Sequential runs through an inner functional graph: one layer to the user
        kept.append(layer)
    return kept, rnn_mask


def _shape_tensor(shape: Any) -> Any:
    if isinstance(shape, list | tuple):
        return tf.stack([tf.cast(d, tf.int32) for d in shape]) if shape else tf.constant([], tf.int32)
    return shape
