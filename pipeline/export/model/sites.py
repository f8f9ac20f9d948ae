"""Find every dropout mask a Keras model draws: its ``DropoutSite``s.

``describe(model)`` traces the whole model in training mode with every Keras random
draw intercepted (``mcdrop.pipeline.export.model.random_calls``) and turns the draws into
``DropoutSite``s, wherever they happen: a ``Dropout``-family layer (also inside
``TimeDistributed``, a nested model or a custom layer), an RNN cell's input and recurrent
masks (``LSTM``, ``GRU``, ``SimpleRNN``, also inside ``Bidirectional``), or
``MultiHeadAttention``'s dropout on the attention probabilities, or **stochastic depth**
(DropPath: ``StochasticDepth`` in Keras's ConvNeXt, and any layer with the same pattern — one
``keras.random.uniform`` per sample turned into a keep flag by ``floor(keep + u)`` and the
input scaled by ``1/keep``, which a probe of the layer confirms, see ``path_drop_rate``).
Randomness that is not dropout inside a layer that must run in training mode, and
TensorFlow random ops that bypass Keras, are refused by name: a model with dropout is
never exported as if it had none.

A site's "owner" is the top-level layer (or the layer inside a nested model) whose call draws the mask:
the layer the rewritten forward pass (``mcdrop.pipeline.export.graphs.forward``) calls in training mode.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
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
PLAIN, INPUT, RECURRENT, ATTENTION, PATH = "plain", "input", "recurrent", "attention", "path"
MASK_KINDS = (PLAIN, INPUT, RECURRENT, ATTENTION, PATH)


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
    """``plain`` (a Dropout layer's input), ``input`` / ``recurrent`` (an RNN cell's masks), ``attention``,
    ``path`` (stochastic depth: one keep flag per sample for a whole residual branch)."""
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
        if call.function == "uniform":
            _probe_path_drop(call)
    for call in calls:
        key = site_key(call)
        if key is None:
            others.append(call)
            continue
        draft = _draft(model, call, key)
        if call.function == "uniform" and path_drop_rate(call.layer) is not None and draft.layer != draft.owner:
            raise ExportError(
                f"Stochastic depth {draft.layer!r} sits inside {draft.owner!r}. Expected stochastic depth only as a "
                "layer of the model itself or of a nested model (with every branch kept it still scales by 1/keep, so "
                f"mcdrop cannot check that {draft.owner!r} changes nothing else in training mode)."
            )
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
        "dropout, attention dropout, stochastic depth (one keras.random.uniform per sample, kept where "
        "floor(keep + u) = 1, the input scaled by 1/keep) or preprocessing augmentation; remove it or replace it "
        "with dropout."
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
        or (call.function == "uniform" and path_drop_rate(layer) is not None)
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
    if call.function == "uniform" and path_drop_rate(layer) is not None:
        return layer_path(layers), PATH
    return layer_path(layers), PLAIN


def _draft(model: keras.Model, call: RandomCall, key: tuple[str, str]) -> DropoutSite:
    path, mask_kind = key
    name = path if mask_kind in (PLAIN, PATH) else f"{path}/{mask_kind}"
    applying = call.layers[:-1] if _cell_in_rnn(call) or mask_kind == ATTENTION else call.layers
    class_name = type(applying[-1]).__name__ if applying else "keras.random"
    args = call.arguments
    if call.function == "dropout":
        kind, rate = BERNOULLI, float(args["rate"])
        input_shape = _row_shape(name, tuple(args["inputs"].shape))
        call_shape = _mask_shape(name, input_shape, args.get("noise_shape"))
    else:
        kind = GAUSSIAN if call.function == "normal" else BERNOULLI
        path_drop = path_drop_rate(call.layer)
        rate = path_drop if path_drop is not None else float(getattr(call.layer, "rate", 0.0))
        shape = args["shape"]
        if not isinstance(shape, list | tuple):
            raise ExportError(f"Dropout {name!r} draws a mask of dynamic shape. Expected a static per-row shape.")
        input_shape = call_shape = _row_shape(name, tuple(None if tf.is_tensor(d) else d for d in shape))
    return DropoutSite(name, path, class_name, kind, mask_kind, rate, input_shape, call_shape, 1,
                       _owner(model, call.layers))  # fmt: skip


# Stochastic depth --------------------------------------------------------------------------------

_PATH_DROP: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_PROBE_ROWS = 2
_SMALLEST_PATH_DROP = 1e-4


def path_drop_rate(layer: Any) -> float | None:
    """The drop rate of a stochastic-depth layer (confirmed by ``_probe_path_drop``), or None for any other layer."""
    return _PATH_DROP.get(layer) if layer is not None else None


def _probe_path_drop(call: RandomCall) -> None:
    """Is this ``keras.random.uniform`` draw stochastic depth? Call its layer alone in training mode twice on
    positive rows, answering the draw with 1.0 (what mcdrop feeds for "kept") and then 0.0 ("dropped"): stochastic
    depth returns the rows times one constant 1/keep, then zeros. Then the draw is a Bernoulli keep flag per sample
    at rate 1 - keep (kept where u >= rate), and mcdrop answers it with its own keep flags, like AlphaDropout's.

    Anything else (another shape, range or formula, a layer that cannot be called alone) is left unrecorded, and
    refused later as randomness that is not dropout.
    """
    layer, args = call.layer, call.arguments
    shape = args.get("shape")
    if layer is None or layer in _PATH_DROP or isinstance(layer, keras.layers.AlphaDropout) or _is_augmentation(layer):
        return
    if not isinstance(shape, list | tuple) or len(shape) < 2 or any(tf.is_tensor(d) or d != 1 for d in shape[1:]):
        return  # not one draw per sample
    try:
        if float(args.get("minval", 0.0)) != 0.0 or float(args.get("maxval", 1.0)) != 1.0:
            return
        rows = np.random.default_rng(0).uniform(0.5, 1.5, (_PROBE_ROWS, *_probe_row_shape(layer, len(shape))))
        answers = [_answered(layer, rows.astype(np.float32), flag) for flag in (1.0, 0.0)]
    except Exception:  # noqa: BLE001 - a layer that cannot be probed alone is simply not recognised
        return
    kept, dropped = answers
    if kept is None or dropped is None:
        return
    scale = kept / rows
    if not (np.allclose(dropped, 0.0) and np.allclose(scale, scale.flat[0], rtol=1e-5)):
        return
    keep = 1.0 / float(scale.flat[0])
    if keep > 0.0 and 1.0 - keep >= _SMALLEST_PATH_DROP:  # no scale (or 1/keep within rounding of 1) is not dropout
        _PATH_DROP[layer] = round(1.0 - keep, 6)


def _probe_row_shape(layer: Any, rank: int) -> tuple[int, ...]:
    """The layer's input row shape where it is known (unknown sizes as 3), else 3s of the draw's rank."""
    try:
        known = tuple(layer.input.shape)[1:]
    except (AttributeError, ValueError):
        known = ()
    if len(known) != rank - 1:
        return (3,) * (rank - 1)
    return tuple(3 if d is None else int(d) for d in known)


def _answered(layer: Any, rows: np.ndarray, flag: float) -> np.ndarray | None:
    """The layer's training-mode output with every uniform draw answered by ``flag``; None unless it drew once."""
    draws: list[RandomCall] = []

    def answer(call: RandomCall) -> Any:
        draws.append(call)
        if call.function != "uniform":
            return call.neutral()
        return tf.fill(tf.cast(tf.stack(list(call.arguments["shape"])), tf.int32),
                       tf.constant(flag, call.arguments.get("dtype") or "float32"))  # fmt: skip

    with random_calls.intercepted(answer, root=layer):
        out = layer(tf.constant(rows), training=True)
    if len(draws) != 1 or draws[0].function != "uniform" or not tf.is_tensor(out):
        return None
    return np.asarray(out, np.float64)


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
