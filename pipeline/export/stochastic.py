"""Rewrite a Keras model's forward pass with explicit control over its dropout layers.

``forward(model, x, policy, samples)`` runs the model's own layers one by one
(functional graph order, or layer order for ``Sequential``), calling every
ordinary layer in inference mode and handing every dropout-family layer to a
``Policy`` that decides what it does: nothing (deterministic), an in-graph
random mask, a mask fed from outside, or Keras's own training-mode dropout
(the verification reference).

With ``samples`` (T) given, the pass carries T Monte-Carlo samples folded into
the batch dimension (row ``t * B + b``). The input is *not* repeated up front:
a tensor is tiled T times only when it first reaches a dropout layer (or meets
an already-tiled tensor), so everything before the first dropout is computed
once per input — prefix caching falls out of the graph walk.

Why not ``model(x, training=True)``: Keras 3 dropout draws from stateless random
ops that LiteRT cannot run, the converter silently drops ``training=True``
dropout, and the flag also flips BatchNormalization into training mode.

Walking the layer graph needs a few private Keras APIs; they are used only through
``mcdrop.pipeline.export.keras_internals``, which checks for them up front.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from mcdrop.pipeline.export import keras_internals
from mcdrop.serving.errors import ExportError

BERNOULLI = "bernoulli"
GAUSSIAN = "gaussian"

# Layers with their own randomness that are identity at inference and have
# nothing to do with dropout: passed through (inactive) rather than refused.
_INACTIVE_AUGMENTATION_PREFIX = "Random"


@dataclasses.dataclass(frozen=True)
class StochasticLayer:
    """One dropout-family layer as it appears in the exported graphs."""

    path: str
    """Unique name: the layer name, prefixed by enclosing model names for nested models."""
    class_name: str
    kind: str
    """``bernoulli`` (keep/drop masks, scaled by 1/(1-rate)) or ``gaussian`` (multiplicative N(1, rate/(1-rate)))."""
    rate: float
    input_shape: tuple[int, ...]
    """Shape of the layer's input without the batch dimension."""
    noise_shape: tuple[int, ...]
    """Shape of one row's mask without the batch dimension (1 where a mask is shared, e.g. spatial)."""

    @property
    def feed_name(self) -> str:
        """Name of this layer's mask (or noise) input in ``mc_masked.tflite``."""
        prefix = "mask" if self.kind == BERNOULLI else "noise"
        return f"{prefix}_{_sanitise(self.path)}"

    @property
    def feed_dtype(self) -> tf.DType:
        return tf.uint8 if self.kind == BERNOULLI else tf.float32

    @property
    def tensor_name(self) -> str:
        """Name of the mask tensor inside ``mc.tflite`` (read back during verification)."""
        return f"mcdrop_{'keep' if self.kind == BERNOULLI else 'noise'}_{_sanitise(self.path)}"

    def as_manifest(self) -> dict[str, Any]:
        return {
            "name": self.path,
            "class": self.class_name,
            "kind": self.kind,
            "rate": self.rate,
            "input_shape": list(self.input_shape),
            "noise_shape": list(self.noise_shape),
            "masked_input": self.feed_name,
            "masked_input_dtype": self.feed_dtype.name,
            "masked_input_shape": ["T", "B", *self.noise_shape],
        }


Policy = Callable[[keras.layers.Layer, StochasticLayer, tf.Tensor], tf.Tensor]


def forward(model: keras.Model, x: tf.Tensor, policy: Policy, samples: tf.Tensor | None = None) -> tf.Tensor:
    """Run ``model`` on ``x``, letting ``policy`` decide what each dropout layer does.

    Returns:
        ``[B, ...]`` without ``samples``; ``[T, B, ...]`` with ``samples = T``.
    """
    keras_internals.check_supported()
    walk = _Walk(policy, samples)
    y = walk.run_model(model, x, prefix="")
    if samples is None:
        return y
    if not walk.is_expanded(y):
        y = _tile(y, samples)
    batch = tf.shape(x)[0]
    return tf.reshape(y, tf.concat([tf.stack([samples, batch]), tf.shape(y)[1:]], axis=0))


def describe(model: keras.Model) -> list[StochasticLayer]:
    """The dropout-family layers of ``model`` in call order, with their shapes.

    Raises:
        ExportError: a stochastic layer mcdrop cannot export (named in the message),
            a shared dropout layer, or a model that is neither Sequential nor functional.
    """
    found: list[StochasticLayer] = []

    def record(layer: keras.layers.Layer, spec: StochasticLayer, h: tf.Tensor) -> tf.Tensor:
        if any(s.path == spec.path for s in found):
            raise ExportError(
                f"Dropout layer {spec.path!r} is called more than once. Expected each dropout layer to be "
                "called once, so that every call has its own mask."
            )
        found.append(spec)
        return h

    keras_internals.check_supported()
    input_spec = _input_spec(model)
    tf.function(lambda x: forward(model, x, record)).get_concrete_function(input_spec)
    return found


def input_signature(model: keras.Model) -> tuple[tuple[int, ...], tf.DType]:
    """Per-row input shape (without batch) and dtype of a single-input model."""
    spec = _input_spec(model)
    return tuple(int(d) for d in spec.shape[1:]), spec.dtype


# Policies ---------------------------------------------------------------------------------------


def deterministic(layer: keras.layers.Layer, spec: StochasticLayer, h: tf.Tensor) -> tf.Tensor:
    """The standard inference rule: inverted dropout is the identity at test time."""
    return h


def in_graph_random(layer: keras.layers.Layer, spec: StochasticLayer, h: tf.Tensor) -> tf.Tensor:
    """Masks drawn inside the graph by LiteRT builtin random ops.

    ``seed = seed2 = 0`` on purpose: LiteRT then seeds each op from the OS and
    its state advances on every invoke. Any fixed seed (which TF derives from a
    global seed, e.g. after ``keras.utils.set_random_seed``) would restart the
    sequence whenever tensors are re-allocated and repeat masks.
    """
    shape = _noise_shape(h, spec)
    if spec.kind == BERNOULLI:
        uniform = tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)
        keep = tf.cast(uniform >= spec.rate, tf.float32, name=spec.tensor_name)
        return h * (keep * (1.0 / (1.0 - spec.rate)))
    noise = tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0, name=spec.tensor_name)
    return h * (1.0 + _gaussian_std(spec.rate) * noise)


def fed_masks(feeds: dict[str, tf.Tensor], batch: tf.Tensor) -> Policy:
    """Masks (uint8 keep flags) or standard-normal noise fed as ``[T, B, *noise_shape]`` inputs."""

    def policy(layer: keras.layers.Layer, spec: StochasticLayer, h: tf.Tensor) -> tf.Tensor:
        fed = feeds[spec.feed_name]
        rows = tf.shape(fed)[0] * batch
        fed = tf.reshape(fed, tf.concat([[rows], tf.constant(spec.noise_shape, tf.int32)], axis=0))
        if spec.kind == BERNOULLI:
            return h * (tf.cast(fed, tf.float32) * (1.0 / (1.0 - spec.rate)))
        return h * (1.0 + _gaussian_std(spec.rate) * fed)

    return policy


def keras_training_mode(layer: keras.layers.Layer, spec: StochasticLayer, h: tf.Tensor) -> tf.Tensor:
    """Keras's own dropout implementation in training mode: the independent MC reference."""
    return layer(h, training=True)


# The walk ---------------------------------------------------------------------------------------


class _Walk:
    def __init__(self, policy: Policy, samples: tf.Tensor | None) -> None:
        self._policy = policy
        self._samples = samples
        self._expanded: set[Any] = set()

    def is_expanded(self, tensor: Any) -> bool:
        return tf.is_tensor(tensor) and tensor.ref() in self._expanded

    def run_model(self, model: keras.Model, inputs: Any, prefix: str) -> Any:
        if isinstance(model, keras.Sequential):
            h = inputs
            for layer in model.layers:
                h = self._call(layer, (h,), {}, prefix)
            return h
        if keras_internals.is_functional(model):
            return keras_internals.run_through_graph(
                model, inputs, lambda op: lambda *a, **k: self._call(op, a, k, prefix)
            )
        raise ExportError(
            f"Model {model.name!r} is a subclassed {type(model).__name__}. mcdrop exports Sequential and "
            "functional Keras models, whose layer graph it can walk."
        )

    def _call(self, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], prefix: str) -> Any:
        path = f"{prefix}{op.name}"
        if isinstance(op, keras.Model) and contains_stochastic(op):
            if len(args) != 1:
                raise ExportError(f"Nested model {path!r} takes {len(args)} inputs. Expected exactly one.")
            return self.run_model(op, args[0], prefix=f"{path}/")
        spec = stochastic_spec(op, path, args[0] if args else None)
        if spec is not None:
            h = args[0]
            if self._samples is not None and not self.is_expanded(h):
                h = _tile(h, self._samples)
            out = self._policy(op, spec, h)
            if self._samples is not None:
                self._expanded.add(out.ref())
            return out
        if self._samples is not None:
            tensors = [t for t in tf.nest.flatten((args, kwargs)) if tf.is_tensor(t)]
            if any(self.is_expanded(t) for t in tensors):
                args, kwargs = tf.nest.map_structure(self._expand, (args, kwargs))
                out = _call_inference(op, args, kwargs)
                for tensor in tf.nest.flatten(out):
                    if tf.is_tensor(tensor):
                        self._expanded.add(tensor.ref())
                return out
        return _call_inference(op, args, kwargs)

    def _expand(self, value: Any) -> Any:
        if tf.is_tensor(value) and not self.is_expanded(value) and self._samples is not None:
            tiled = _tile(value, self._samples)
            self._expanded.add(tiled.ref())
            return tiled
        return value


def _call_inference(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a layer in inference mode, overriding any ``training=True`` baked into the graph."""
    if keras_internals.takes_training_argument(op) or "training" in kwargs:
        kwargs = {**kwargs, "training": False}
    return op(*args, **kwargs)


def contains_stochastic(model: keras.Model) -> bool:
    return any(
        _is_stochastic_class(layer) or (isinstance(layer, keras.Model) and contains_stochastic(layer))
        for layer in model.layers
    )


def stochastic_spec(op: Any, path: str, h: Any) -> StochasticLayer | None:
    """Describe ``op`` if it is a supported dropout layer; None if it is deterministic.

    Raises:
        ExportError: ``op`` is stochastic but not a supported dropout layer.
    """
    if not _is_stochastic_class(op):
        return None
    name = type(op).__name__
    if name.startswith(_INACTIVE_AUGMENTATION_PREFIX) and not isinstance(op, keras.layers.Dropout):
        return None
    gaussian = isinstance(op, keras.layers.GaussianDropout)
    if not gaussian and (isinstance(op, keras.layers.AlphaDropout) or not isinstance(op, keras.layers.Dropout)):
        raise ExportError(
            f"Layer {path!r} ({name}) is stochastic and not supported. Expected only Dropout, "
            "SpatialDropout1D/2D/3D or GaussianDropout; remove or replace it before export."
        )
    input_shape = tuple(int(d) if d is not None else -1 for d in h.shape[1:])
    if any(d < 0 for d in input_shape):
        raise ExportError(
            f"Dropout layer {path!r} sees input shape {tuple(h.shape)}. Expected every dimension but the "
            "batch to be known."
        )
    rate = float(op.rate)
    if gaussian:
        return StochasticLayer(path, name, GAUSSIAN, rate, input_shape, input_shape)
    return StochasticLayer(path, name, BERNOULLI, rate, input_shape, _bernoulli_noise_shape(op, path, input_shape))


def _bernoulli_noise_shape(op: Any, path: str, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    name = type(op).__name__
    if name.startswith("SpatialDropout"):
        channels_first = getattr(op, "data_format", "channels_last") == "channels_first"
        if channels_first:
            return (input_shape[0],) + (1,) * (len(input_shape) - 1)
        return (1,) * (len(input_shape) - 1) + (input_shape[-1],)
    noise_shape = getattr(op, "noise_shape", None)
    if noise_shape is None:
        return input_shape
    if noise_shape[0] is not None:
        raise ExportError(
            f"Dropout layer {path!r} has noise_shape={tuple(noise_shape)} with a fixed batch dimension. "
            "Expected None in the batch position (one mask per row)."
        )
    return tuple(int(d) if d is not None else input_shape[i] for i, d in enumerate(noise_shape[1:]))


def _is_stochastic_class(op: Any) -> bool:
    """Keras layers that draw random numbers hold a SeedGenerator."""
    if isinstance(op, keras.layers.Dropout | keras.layers.GaussianDropout | keras.layers.GaussianNoise):
        return True
    return isinstance(op, keras.layers.Layer) and any(
        isinstance(value, keras.random.SeedGenerator) for value in vars(op).values()
    )


def _input_spec(model: keras.Model) -> tf.TensorSpec:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ExportError(
            f"Model {model.name!r} has no known inputs. Expected a built Sequential or functional model "
            "(give Sequential models an Input layer or build them first)."
        )
    if len(inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(
            f"Model {model.name!r} has {len(inputs)} input(s) and {len(model.outputs)} output(s). "
            "Expected exactly one of each."
        )
    shape = tuple(inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise ExportError(f"Model input shape {shape} has unknown dimensions. Expected only the batch to be unknown.")
    return tf.TensorSpec([None, *shape[1:]], tf.as_dtype(inputs[0].dtype), name="x")


def _noise_shape(h: tf.Tensor, spec: StochasticLayer) -> tf.Tensor:
    return tf.concat([tf.shape(h)[:1], tf.constant(spec.noise_shape, tf.int32)], axis=0)


def _tile(h: tf.Tensor, samples: tf.Tensor) -> tf.Tensor:
    multiples = tf.concat([tf.reshape(samples, [1]), tf.ones([len(h.shape) - 1], tf.int32)], axis=0)
    return tf.tile(h, multiples)


def _gaussian_std(rate: float) -> float:
    return math.sqrt(rate / (1.0 - rate))


def _sanitise(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", path.replace("/", "__"))
