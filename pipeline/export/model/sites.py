"""Find every dropout mask a Keras model draws: its ``DropoutSite``s.

``describe(model)`` traces the whole model in training mode with every Keras random
draw intercepted (``mcdrop.pipeline.export.model.random_calls``) and turns the draws into
``DropoutSite``s, wherever they happen: a ``Dropout``-family layer (also inside
``TimeDistributed``, a nested model or a custom layer), an RNN cell's input and recurrent
masks (``LSTM``, ``GRU``, ``SimpleRNN``, also inside ``Bidirectional``), or
``MultiHeadAttention``'s dropout on the attention probabilities. Randomness that is
not dropout inside a layer that must run in training mode, and TensorFlow random ops
that bypass Keras, are refused by name: a model with dropout is never exported as if
it had none.

A site's "owner" is the top-level layer (or the layer inside a nested model) whose call draws the mask:
the layer the rewritten forward pass (``mcdrop.pipeline.export.graphs.forward``) calls in training mode.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model import keras_internals, random_calls
from mcdrop.pipeline.export.model.random_calls import RandomCall, layer_path
from mcdrop.pipeline.export.model.signature import input_specs, packed, trace, walkable
from mcdrop.serving.models import manifest

BERNOULLI = "bernoulli"
GAUSSIAN = "gaussian"
PLAIN, INPUT, RECURRENT, ATTENTION = "plain", "input", "recurrent", "attention"
MASK_KINDS = (PLAIN, INPUT, RECURRENT, ATTENTION)


@dataclasses.dataclass(frozen=True)
class DropoutSite:
    """One dropout mask of the model, as it appears in the exported graphs."""

    name: str
    """Unique name: the layer's path, plus ``/input``, ``/recurrent`` or ``/attention`` for masks inside a layer."""
    layer: str
    """Path of the layer that applies the mask (enclosing model and layer names, ``/``-separated)."""
    class_name: str
    kind: str
    """``bernoulli`` (keep/drop flags) or ``gaussian`` (multiplicative N(1, rate/(1-rate)) noise)."""
    mask_kind: str
    """``plain`` (a Dropout layer's input), ``input`` / ``recurrent`` (an RNN cell's masks), ``attention``."""
    rate: float
    input_shape: tuple[int, ...]
    """Per-row shape of the tensor one draw masks (without the batch dimension)."""
    call_shape: tuple[int, ...]
    """Per-row shape of one draw's mask (1 where it is shared, e.g. spatial dropout)."""
    calls: int
    """Draws per forward pass: 1, 4 for an LSTM's gate masks, one per step inside ``TimeDistributed``."""
    owner: str
    """Path of the layer the forward pass calls in training mode to apply this mask."""

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """One row's mask (all draws of a forward pass) without the batch dimension."""
        return (self.calls, *self.call_shape) if self.calls > 1 else self.call_shape

    @property
    def feed_name(self) -> str:
        """Name of this site's mask (or noise) input in ``mc_masked.tflite``."""
        prefix = "mask" if self.kind == BERNOULLI else "noise"
        return f"{prefix}_{sanitise(self.name)}"

    @property
    def feed_dtype(self) -> tf.DType:
        return tf.uint8 if self.kind == BERNOULLI else tf.float32

    @property
    def tensor_name(self) -> str:
        """Name of the mask tensor inside ``mc.tflite`` (read back during verification)."""
        return f"mcdrop_{'keep' if self.kind == BERNOULLI else 'noise'}_{sanitise(self.name)}"

    def to_manifest(self) -> manifest.DropoutSite:
        """The site as the manifest records it (what a server draws masks for)."""
        return manifest.DropoutSite(
            name=self.name,
            kind=manifest.NoiseKind(self.kind),
            rate=self.rate,
            noise_shape=tuple(self.noise_shape),
            feed_name=self.feed_name,
            layer=self.layer,
            layer_class=self.class_name,
            mask_kind=self.mask_kind,
            calls=self.calls,
            input_shape=tuple(self.input_shape),
            feed_dtype=self.feed_dtype.name,
            feed_shape=("T", "B", *self.noise_shape),
        )


# Finding the sites ------------------------------------------------------------------------------


def describe(model: keras.Model) -> list[DropoutSite]:
    """Every dropout mask ``model`` draws in training mode, in call order.

    Raises:
        ExportError: randomness mcdrop cannot export (named, with the reason), a mask that is not
            per row, or a model that cannot be traced.
    """
    keras_internals.check_supported()
    specs = input_specs(model)
    calls: list[RandomCall] = []

    def record(call: RandomCall) -> Any:
        calls.append(call)
        return call.neutral()

    with keras_internals.unrolled_rnns(model), random_calls.intercepted(record, root=model):
        concrete = trace(lambda *x: model(packed(model, x), training=True), specs,
                          f"Tracing model {model.name!r} in training mode")  # fmt: skip
    if foreign := random_calls.foreign_random_ops(concrete.graph):
        op, scope = foreign[0]
        raise ExportError(
            f"The model draws random numbers with a TensorFlow op mcdrop cannot control ({op} in {scope!r}). "
            "Expected randomness only from Keras (keras.layers.Dropout and its family, RNN dropout, "
            "keras.random.dropout); replace tf.random / tf.nn.dropout with them."
        )
    return _sites(model, calls)


def _sites(model: keras.Model, calls: list[RandomCall]) -> list[DropoutSite]:
    drafts: dict[tuple[str, str], DropoutSite] = {}
    others = []
    for call in calls:
        key = site_key(call)
        if key is None:
            others.append(call)
            continue
        draft = _draft(model, call, key)
        previous = drafts.get(key)
        if previous is None:
            drafts[key] = draft
        elif (previous.call_shape, previous.rate, previous.kind) != (draft.call_shape, draft.rate, draft.kind):
            raise ExportError(
                f"Dropout {draft.name!r} draws masks of different shapes or rates in one pass "
                f"({previous.call_shape} at rate {previous.rate}, then {draft.call_shape} at rate {draft.rate}). "
                "Expected every call of a dropout layer to see the same shape."
            )
        else:
            drafts[key] = dataclasses.replace(previous, calls=previous.calls + 1)
    sites = list(drafts.values())
    owners = {site.owner for site in sites}
    for call in others:
        _check_other_randomness(model, call, owners)
    for site in sites:
        if site.class_name == "AlphaDropout" and site.layer != site.owner:
            raise ExportError(
                f"AlphaDropout {site.layer!r} sits inside {site.owner!r}. Expected AlphaDropout only as a layer of "
                "the model itself (its training-mode transform is not the identity, so mcdrop cannot check that "
                f"{site.owner!r} changes nothing else in training mode)."
            )
    return sites


def _check_other_randomness(model: keras.Model, call: RandomCall, owners: set[str]) -> None:
    """Randomness that is not dropout: preprocessing augmentation is inactive at inference (and stays so
    when it runs in inference mode); anything else is refused by name."""
    layer = call.layer
    name = type(layer).__name__ if layer is not None else "keras.random"
    path = layer_path(call.layers) or model.name
    owner = _owner(model, call.layers)
    if _is_augmentation(layer) and owner not in owners:
        return
    if owner in owners:
        raise ExportError(
            f"Layer {path!r} ({name}) draws random numbers that are not dropout (keras.random.{call.function}) "
            f"inside {owner!r}, which mcdrop must run in training mode to keep its dropout on: not supported. "
            f"Expected only dropout there; move {name} out of {owner!r}."
        )
    raise ExportError(
        f"Layer {path!r} ({name}) draws random numbers that are not dropout (keras.random.{call.function}): not "
        "supported. Expected only Dropout, SpatialDropout1D/2D/3D, GaussianDropout, AlphaDropout, RNN (recurrent) "
        "dropout, attention dropout or preprocessing augmentation; remove it or replace it with dropout."
    )


def _is_augmentation(layer: Any) -> bool:
    """Keras's random preprocessing layers (RandomFlip, RandomRotation, …): identity at inference."""
    return layer is not None and type(layer).__module__.startswith("keras.src.layers.preprocessing")


def site_key(call: RandomCall) -> tuple[str, str] | None:
    """``(layer path, mask kind)`` of a dropout draw; None for randomness that is not dropout."""
    layer = call.layer
    dropout_family = (
        call.function == "dropout"
        or (call.function == "normal" and isinstance(layer, keras.layers.GaussianDropout))
        or (call.function == "uniform" and isinstance(layer, keras.layers.AlphaDropout))
    )
    if not dropout_family:
        return None
    layers = call.layers
    if call.rnn_mask and len(layers) >= 2 and isinstance(layers[-2], keras.layers.RNN):
        return layer_path(layers[:-1]), call.rnn_mask  # the cell's masks belong to its RNN layer
    if call.rnn_mask:
        return layer_path(layers), call.rnn_mask
    parent = layers[-2] if len(layers) >= 2 else None
    if isinstance(parent, keras.layers.MultiHeadAttention) and layer is getattr(parent, "_dropout_layer", None):
        return layer_path(layers[:-1]), ATTENTION
    return layer_path(layers), PLAIN


def _draft(model: keras.Model, call: RandomCall, key: tuple[str, str]) -> DropoutSite:
    path, mask_kind = key
    name = path if mask_kind == PLAIN else f"{path}/{mask_kind}"
    applying = call.layers[:-1] if _cell_in_rnn(call) or mask_kind == ATTENTION else call.layers
    class_name = type(applying[-1]).__name__ if applying else "keras.random"
    args = call.arguments
    if call.function == "dropout":
        kind, rate = BERNOULLI, float(args["rate"])
        input_shape = _row_shape(name, tuple(args["inputs"].shape))
        call_shape = _mask_shape(name, input_shape, args.get("noise_shape"))
    else:
        kind = GAUSSIAN if call.function == "normal" else BERNOULLI
        rate = float(getattr(call.layer, "rate", 0.0))
        shape = args["shape"]
        if not isinstance(shape, list | tuple):
            raise ExportError(f"Dropout {name!r} draws a mask of dynamic shape. Expected a static per-row shape.")
        input_shape = call_shape = _row_shape(name, tuple(None if tf.is_tensor(d) else d for d in shape))
    return DropoutSite(name, path, class_name, kind, mask_kind, rate, input_shape, call_shape, 1,
                       _owner(model, call.layers))  # fmt: skip


def _cell_in_rnn(call: RandomCall) -> bool:
    return bool(call.rnn_mask) and len(call.layers) >= 2 and isinstance(call.layers[-2], keras.layers.RNN)


def _row_shape(name: str, shape: tuple[Any, ...]) -> tuple[int, ...]:
    if not shape or shape[0] is not None:
        raise ExportError(
            f"Dropout {name!r} masks a tensor of shape {shape} whose first dimension is not the batch. "
            "Expected a per-row mask over [batch, ...]."
        )
    if any(d is None for d in shape[1:]):
        raise ExportError(f"Dropout {name!r} sees input shape {shape}. Expected every dimension but the batch known.")
    return tuple(int(d) for d in shape[1:])


def _mask_shape(name: str, input_shape: tuple[int, ...], noise_shape: Any) -> tuple[int, ...]:
    if noise_shape is None:
        return input_shape
    dims = list(noise_shape)
    if dims and isinstance(dims[0], int):
        raise ExportError(
            f"Dropout {name!r} has noise_shape={tuple(dims)} with a fixed batch dimension. "
            "Expected None in the batch position (one mask per row)."
        )
    return tuple(input_shape[i] if d is None or tf.is_tensor(d) else int(d) for i, d in enumerate(dims[1:]))


def _owner(model: keras.Model, layers: list[keras.layers.Layer]) -> str:
    """The layer the forward pass calls to reach ``layers[-1]``: descend through nested walkable models."""
    depth = 0
    while depth < len(layers) - 1 and walkable(layers[depth]):
        depth += 1
    return layer_path(layers[: depth + 1]) if layers else model.name


def sanitise(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", path.replace("/", "__"))


def draw_feeds(sites: list[DropoutSite], samples: int, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Host-side masks (uint8 keep flags) and noise for mc_masked.tflite."""
    feeds: dict[str, np.ndarray] = {}
    for spec in sites:
        shape = (samples, batch, *spec.noise_shape)
        if spec.kind == BERNOULLI:
            feeds[spec.feed_name] = (rng.random(shape, dtype=np.float32) >= spec.rate).astype(np.uint8)
        else:
            feeds[spec.feed_name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds
