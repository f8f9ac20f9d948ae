"""Rewrite a Keras model's forward pass with explicit control over every dropout mask it draws.

The masks are the model's ``DropoutSite``s (``mcdrop.pipeline.export.model.sites``).
``forward(model, sites, x, policy, samples)`` runs the model's own layers one by one
(functional graph order, or layer order for ``Sequential``). The layers that own a site
("owners": the top-level layer, or the layer inside a nested model, whose call draws
the mask) are called in training mode, with ``BatchNormalization`` kept on its moving
statistics, and each of their draws is answered by a ``Policy``: the identity
(deterministic), a builtin random op (``InGraphRandom``), a mask fed from outside
(``FedMasks``) or Keras's own draw (``KerasTrainingMode``, the verification reference).
All other layers run in inference mode. RNNs are unrolled (see
``keras_internals.unrolled_rnns``), so an RNN's masks are drawn once per sequence and
reused at every step, as Keras does.

With ``samples`` (T) given, the pass carries T Monte-Carlo samples folded into the
batch dimension (row ``t * B + b``). The input is *not* repeated up front: a tensor is
tiled T times only when it first reaches an owner (or meets an already-tiled tensor),
so everything before the first dropout is computed once per input. A ``Dropout`` or
``SpatialDropout`` layer that is first to see the samples does not tile at all: one
broadcasting multiply of its ``[B, ...]`` input by the ``[T, B, ...]`` masks makes the
samples (a TILE would copy T x B rows only to multiply them next). Inverted dropout's
scale is applied after the mask, as a multiply by a constant, which the converter folds
into a following Dense or convolution.

Why not ``model(x, training=True)``: Keras 3 draws from stateless random ops that
LiteRT cannot run, the converter silently drops ``training=True`` dropout, and the flag
also flips BatchNormalization into training mode.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model import keras_internals, random_calls
from mcdrop.pipeline.export.model.random_calls import RandomCall, layer_path
from mcdrop.pipeline.export.model.signature import flat_outputs, input_specs, packed, trace, walkable
from mcdrop.pipeline.export.model.sites import BERNOULLI, DropoutSite, path_drop_rate, site_key

# Policies ---------------------------------------------------------------------------------------


class Policy:
    """What a forward pass does with dropout. This base is the standard inference rule (no dropout)."""

    owners_in_training_mode = False
    """Call the layers that own dropout in training mode (else inference mode, like all other layers)."""
    intercepts = True
    """Answer Keras's random draws (else Keras draws them itself)."""
    draws = False
    """Answer draws with ``draw`` (else with the identity: inverted dropout's expected mask)."""

    def draw(self, site: DropoutSite, call: int, rows: tf.Tensor) -> tf.Tensor:
        """Keep flags (float32 0/1) or standard-normal noise for draw ``call`` of ``site``: ``[rows, *call_shape]``."""
        raise NotImplementedError

    def draw_samples(self, site: DropoutSite, call: int, samples: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """The same for T samples of B rows, as ``[T, B, *call_shape]``."""
        shape = tf.concat([tf.stack([samples, batch]), tf.constant(site.call_shape, tf.int32)], axis=0)
        return tf.reshape(self.draw(site, call, samples * batch), shape)

    def trains(self, owner: keras.layers.Layer) -> bool:
        """Whether to call ``owner`` (a layer that owns dropout) in training mode."""
        return self.owners_in_training_mode


class Deterministic(Policy):
    """The standard inference rule: inverted dropout is the identity at test time."""


class TrainingModeIdentity(Policy):
    """Owners in training mode with every mask kept unscaled: must equal inference if dropout is all they change."""

    owners_in_training_mode = True

    def trains(self, owner: keras.layers.Layer) -> bool:
        # AlphaDropout with every unit kept still applies its affine correction, stochastic depth its 1/keep; the
        # probe that recognised the latter checked it does nothing else, and nothing else is in the former.
        return not isinstance(owner, keras.layers.AlphaDropout) and path_drop_rate(owner) is None


class InGraphRandom(Policy):
    """Masks drawn inside the graph by LiteRT builtin random ops, one op per site (all its draws at once).

    ``seed = seed2 = 0`` on purpose: LiteRT then seeds each op from the OS and its state advances
    on every invoke. Any fixed seed (which TF derives from a global seed, e.g. after
    ``keras.utils.set_random_seed``) would restart the sequence whenever tensors are re-allocated
    and repeat masks.
    """

    owners_in_training_mode = True
    draws = True

    def __init__(self) -> None:
        self._drawn: dict[str, tf.Tensor] = {}

    def draw(self, site: DropoutSite, call: int, rows: tf.Tensor) -> tf.Tensor:
        if site.name not in self._drawn:
            shape = tf.concat([tf.reshape(rows, [1]), tf.constant(site.noise_shape, tf.int32)], axis=0)
            if site.kind == BERNOULLI:
                uniform = tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=0, seed2=0)
                self._drawn[site.name] = tf.cast(uniform >= site.rate, tf.float32, name=site.tensor_name)
            else:
                self._drawn[site.name] = tf.raw_ops.RandomStandardNormal(
                    shape=shape, dtype=tf.float32, seed=0, seed2=0, name=site.tensor_name
                )
        return _one_call(self._drawn[site.name], site, call)


class FedMasks(Policy):
    """Masks (uint8 keep flags) or standard-normal noise fed as ``[T, B, *noise_shape]`` tensors."""

    owners_in_training_mode = True
    draws = True

    def __init__(self, feeds: dict[str, Any]) -> None:
        self._feeds = feeds

    def draw(self, site: DropoutSite, call: int, rows: tf.Tensor) -> tf.Tensor:
        fed = tf.cast(tf.convert_to_tensor(self._feeds[site.feed_name]), tf.float32)
        return _one_call(tf.reshape(fed, [-1, *site.noise_shape]), site, call)

    def draw_samples(self, site: DropoutSite, call: int, samples: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        # The fed [T, B, ...] tensor as it is: no reshape computed from runtime shapes, which would make every
        # tensor after it dynamic and keep those ops out of the XNNPACK delegate.
        fed = tf.cast(tf.convert_to_tensor(self._feeds[site.feed_name]), tf.float32)
        return fed[:, :, call] if site.calls > 1 else fed


class KerasTrainingMode(Policy):
    """Keras's own dropout implementation in training mode: the independent MC reference."""

    owners_in_training_mode = True
    intercepts = False


# The forward pass -------------------------------------------------------------------------------


def forward(
    model: keras.Model,
    sites: list[DropoutSite],
    x: Any,
    policy: Policy,
    samples: tf.Tensor | None = None,
    inactive: Sequence[DropoutSite] = (),
) -> Any:
    """Run ``model`` on ``x``, letting ``policy`` answer every dropout draw of ``sites``.

    Args:
        x: the input tensor, or for a model with several inputs a list of them in ``model.inputs`` order.
        sites: the sampled dropout sites; their owners run in training mode.
        inactive: dropout sites left out of sampling (``--mc-layers``): their owners run in inference mode, as
            every other layer, and any draw they still make is answered by the identity.

    Returns:
        ``[B, ...]`` without ``samples``; ``[T, B, ...]`` with ``samples = T``. A model with several outputs gives
        a list of them in ``model.outputs`` order. Each input branch is tiled only where it first meets a sampled
        site (or a tiled tensor), so every branch's prefix runs once per input row.
    """
    keras_internals.check_supported()
    walk = _Walk(sites, policy, samples, inactive)
    with contextlib.ExitStack() as stack:
        stack.enter_context(keras_internals.unrolled_rnns(model))
        if policy.intercepts:
            stack.enter_context(random_calls.intercepted(walk.on_random, root=model))
        y = walk.run_model(model, x, enclosing=())
    walk.check_counts()
    outputs = flat_outputs(model, y)
    if samples is not None:
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        outputs = [_samples_first(out if walk.is_expanded(out) else _tile(out, samples), samples, batch)
                   for out in outputs]  # fmt: skip
    return outputs[0] if len(outputs) == 1 else outputs


def _samples_first(y: tf.Tensor, samples: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    return tf.reshape(y, tf.concat([tf.stack([samples, batch]), tf.shape(y)[1:]], axis=0))


def keras_inference(model: keras.Model, x: Any) -> Any:
    """Keras's own inference pass, with draws made outside training mode answered by the identity.

    The deterministic reference: a layer that keeps dropout on at inference (a custom always-on
    dropout) gets the standard inference rule, every other layer runs as Keras runs it. ``x`` and the result are
    as for ``forward``.
    """
    with keras_internals.unrolled_rnns(model), random_calls.intercepted(RandomCall.neutral, root=model):
        y = model(packed(model, x if isinstance(x, list) else [x]), training=False)
    outputs = flat_outputs(model, y)
    return outputs[0] if len(outputs) == 1 else outputs


BROADCASTING_OWNERS = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                       keras.layers.SpatialDropout3D)  # fmt: skip
"""Owners whose output is exactly ``keras.random.dropout`` of their one input (no other use of the draw)."""


def upstream_owners(model: keras.Model, sites: list[DropoutSite]) -> dict[str, set[str]]:
    """For each owner of ``sites``, the other owners whose output reaches its input (traced data flow)."""
    walk = _Walk(sites, Deterministic(), None, track_flow=True)
    specs = input_specs(model)

    def run(*x: tf.Tensor) -> Any:
        with keras_internals.unrolled_rnns(model), random_calls.intercepted(walk.on_random, root=model):
            return walk.run_model(model, x[0] if len(x) == 1 else list(x), enclosing=())

    trace(run, specs, f"Tracing the data flow of model {model.name!r}")
    return {owner: walk.upstream.get(owner, set()) - {owner} for owner in {s.owner for s in sites}}


class _Walk:
    def __init__(
        self,
        sites: list[DropoutSite],
        policy: Policy,
        samples: tf.Tensor | None,
        inactive: Sequence[DropoutSite] = (),
        *,
        track_flow: bool = False,
    ) -> None:
        self._sites = {(s.layer, s.mask_kind): s for s in sites}
        self._track_flow = track_flow  # off by default: in eager mode its references would keep every tensor alive
        self._inactive = {(s.layer, s.mask_kind) for s in inactive}
        self._owners = {s.owner for s in sites}
        self._taint: dict[Any, frozenset[str]] = {}
        self.upstream: dict[str, set[str]] = {}
        """Owner → owners whose output flows into it (recorded on every pass)."""
        self._policy = policy
        self._samples = samples
        self._expanded: set[Any] = set()
        self._tiled: dict[Any, tf.Tensor] = {}
        self._enclosing: tuple[keras.layers.Layer, ...] = ()
        self._calls: collections.Counter[str] = collections.Counter()
        self._broadcasting = False

    def is_expanded(self, tensor: Any) -> bool:
        return tf.is_tensor(tensor) and tensor.ref() in self._expanded

    def run_model(self, model: keras.Model, inputs: Any, enclosing: tuple[keras.layers.Layer, ...]) -> Any:
        if isinstance(model, keras.Sequential):
            h = inputs
            for layer in model.layers:
                h = self._call(layer, (h,), {}, enclosing)
            return h
        if keras_internals.is_functional(model):
            return keras_internals.run_through_graph(
                model, inputs, lambda op: lambda *a, **k: self._call(op, a, k, enclosing)
            )
        raise ExportError(
            f"Model {model.name!r} is a subclassed {type(model).__name__}. mcdrop exports Sequential and "
            "functional Keras models, whose layer graph it can walk."
        )

    def on_random(self, call: RandomCall) -> Any:
        """Answer one Keras random draw made while a layer runs."""
        enclosing = self._enclosing
        call.layers = [*enclosing, *(layer for layer in call.layers if not any(layer is e for e in enclosing))]
        key = site_key(call)
        site = self._sites.get(key) if key else None
        if site is None and key in self._inactive:
            return call.neutral()  # a dropout left out of sampling: the standard inference rule
        if site is None:
            layer = call.layer
            where = f"Layer {layer_path(call.layers)!r} ({type(layer).__name__})" if layer else "The model"
            raise ExportError(
                f"{where} draws random numbers (keras.random.{call.function}) outside training mode, which is not "
                "dropout mcdrop can export: its deterministic graph would not be deterministic."
            )
        index = self._calls[site.name]
        self._calls[site.name] += 1
        if not self._policy.draws:
            return call.neutral()
        if index >= site.calls:
            raise ExportError(f"Dropout {site.name!r} draws more masks than the {site.calls} found when traced.")
        if self._broadcasting and self._samples is not None:  # [T, B, ...] masks for a [B, ...] input
            return _apply(call, site, self._policy.draw_samples(site, index, self._samples, _rows(call)), True)
        return _apply(call, site, self._policy.draw(site, index, _rows(call)))

    def check_counts(self) -> None:
        if not self._policy.draws:
            return
        for site in self._sites.values():
            if self._calls[site.name] != site.calls:
                raise ExportError(
                    f"Dropout {site.name!r} drew {self._calls[site.name]} mask(s) where the training-mode trace "
                    f"drew {site.calls}. Expected the same calls in every pass."
                )

    def _call(self, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], enclosing: tuple[Any, ...]) -> Any:
        path = layer_path([*enclosing, op])
        if walkable(op) and any(owner.startswith(f"{path}/") for owner in self._owners):
            if len(args) != 1:
                raise ExportError(f"Nested model {path!r} takes {len(args)} inputs. Expected exactly one.")
            return self.run_model(op, args[0], enclosing=(*enclosing, op))
        is_owner = path in self._owners
        tensors = [t for t in tf.nest.flatten((args, kwargs)) if tf.is_tensor(t)]
        taint = frozenset().union(*(self._taint.get(t.ref(), frozenset()) for t in tensors if self._track_flow))
        if is_owner and self._track_flow:
            self.upstream.setdefault(path, set()).update(taint)
            taint = taint | {path}
        sampled = any(self.is_expanded(t) for t in tensors)
        broadcast = (self._samples is not None and is_owner and not sampled and self._policy.draws
                     and type(op) in BROADCASTING_OWNERS and len(tensors) == 1)  # fmt: skip
        expand = self._samples is not None and not broadcast and (is_owner or sampled)
        if expand:
            args, kwargs = tf.nest.map_structure(self._expand, (args, kwargs))
        training = is_owner and self._policy.trains(op)
        if keras_internals.takes_training_argument(op) or "training" in kwargs:
            kwargs = {**kwargs, "training": training}  # also overrides a training=True baked into the graph
        self._enclosing = enclosing
        out = _static_reshape(op, args, kwargs)
        if out is None:
            self._broadcasting = broadcast
            try:
                with keras_internals.batch_norm_frozen(op) if training else contextlib.nullcontext():
                    out = op(*args, **kwargs)
            finally:
                self._broadcasting = False
        for tensor in tf.nest.flatten(out):
            if tf.is_tensor(tensor):
                if taint and self._track_flow:
                    self._taint[tensor.ref()] = taint
                if expand or broadcast:
                    self._expanded.add(tensor.ref())
        return out

    def _expand(self, value: Any) -> Any:
        if not tf.is_tensor(value) or self.is_expanded(value) or self._samples is None:
            return value
        if value.ref() not in self._tiled:  # one TILE per tensor, however many layers read it
            tiled = _tile(value, self._samples)
            self._expanded.add(tiled.ref())
            self._tiled[value.ref()] = tiled
        return self._tiled[value.ref()]


def _static_reshape(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tf.Tensor | None:
    """``Flatten`` / ``Reshape`` as a reshape to a constant ``[-1, ...]`` shape, or None to call the layer.

    Keras reshapes to ``(tf.shape(x)[0], ...)``, a shape computed at run time: LiteRT then treats every tensor
    after it as dynamic and keeps those ops out of the XNNPACK delegate (a CNN's dense head ran on the slower
    builtin kernels). The result is the same tensor.
    """
    if type(op) not in (keras.layers.Flatten, keras.layers.Reshape) or set(kwargs) - {"training"} or len(args) != 1:
        return None
    if getattr(op, "data_format", "channels_last") != "channels_last" or not tf.is_tensor(args[0]):
        return None
    row_shape = args[0].shape[1:]
    if not row_shape.is_fully_defined():
        return None
    target = tuple(op.compute_output_shape((None, *row_shape.as_list())))[1:]
    if any(d is None or d < 0 for d in target):
        return None
    return tf.reshape(args[0], [-1, *target])


def _apply(call: RandomCall, site: DropoutSite, drawn: tf.Tensor, per_sample: bool = False) -> tf.Tensor:
    """What Keras's random function returns, built from our keep flags or noise.

    ``per_sample``: ``drawn`` is ``[T, B, ...]`` and the ``[B, ...]`` input is broadcast against it.
    """
    args = call.arguments
    if call.function == "dropout":
        inputs = args["inputs"]
        keep = tf.cast(drawn, inputs.dtype)
        scale = tf.constant(1.0 / (1.0 - site.rate), inputs.dtype)
        if not per_sample:
            # The scale last, as a multiply by a constant: the converter folds it into a following Dense or conv.
            return inputs * keep * scale
        row_shape = inputs.shape[1:]
        # Scaled on the B input rows (cheap), and a constant target shape when the row shape is known: a shape
        # computed at run time makes the tensors after it dynamic, which XNNPACK does not take.
        target = [-1, *row_shape] if row_shape.is_fully_defined() else tf.concat([[-1], tf.shape(inputs)[1:]], 0)
        return tf.reshape((inputs * scale)[tf.newaxis] * keep, target)
    if call.function == "normal":  # GaussianDropout: N(mean, stddev) from standard-normal noise
        return args.get("mean", 0.0) + args.get("stddev", 1.0) * drawn
    # AlphaDropout keeps an element where uniform >= rate, stochastic depth where floor(keep + uniform) = 1, i.e.
    # also uniform >= rate: 1.0 is kept and 0.0 dropped in both.
    return drawn


def _rows(call: RandomCall) -> tf.Tensor:
    if call.function == "dropout":
        return tf.shape(call.arguments["inputs"])[0]
    first = call.arguments["shape"][0]
    return tf.cast(first, tf.int32) if tf.is_tensor(first) else tf.constant(first, tf.int32)


def _one_call(drawn: tf.Tensor, site: DropoutSite, call: int) -> tf.Tensor:
    return drawn[:, call] if site.calls > 1 else drawn


def _tile(h: tf.Tensor, samples: tf.Tensor) -> tf.Tensor:
    multiples = tf.concat([tf.reshape(samples, [1]), tf.ones([len(h.shape) - 1], tf.int32)], axis=0)
    return tf.tile(h, multiples)
