"""Sampling-free MC dropout: the mean and variance of every unit under dropout, propagated in one pass.

``forward(model, sites, x)`` walks the model's layers like ``graphs.forward.forward`` but carries, after the first
sampled dropout site, a ``Gaussian`` (elementwise mean and variance) instead of a tensor — the moment
propagation of Brach, Sick & Dürr (2020, "Single Shot MC Dropout Approximation") and Postels et al. (2019,
"Sampling-free epistemic uncertainty estimation using approximated variance propagation"). Everything before
the first site runs as in inference, once.

Rules (``Var`` per unit; every rule assumes the units entering a layer are **independent**, which dropout makes
them only approximately — the export's own check, ``verify.moments``, measures what this costs on the model):

* dropout (``Dropout``, ``SpatialDropout1D/2D/3D``, ``GaussianDropout``) with keep probability q = 1 − rate:
  mean kept, ``E[out²] = E[in²] / q``, so ``Var = (Var_in + mean²) / q − mean²`` (exact per unit). Spatial
  dropout's one mask per channel makes a channel's units co-vary by (1 − q)/q mean[p] mean[p']: the next
  convolution (or Flatten → Dense) sums that covariance exactly, per channel (``Gaussian.shared``);
* linear layers (``Dense``, ``Conv1D/2D/3D``, ``DepthwiseConv1D/2D``, ``SeparableConv1D/2D``, average pooling):
  mean through W, variance through W² (element-wise squares); elementwise affine layers (``BatchNormalization``
  in inference, ``Normalization``, ``Rescaling``): scale and scale²;
* ReLU and max pooling: the exact moments of the max of two Gaussians (Clark, 1961; ReLU is max(X, 0)), pooling
  windows folded pairwise;
* other elementwise activations (sigmoid, tanh, GELU, SiLU, ELU, softplus, …): Gauss–Hermite quadrature with
  ``QUADRATURE_POINTS`` nodes — the activation itself evaluated at fixed offsets of the mean, builtin ops only;
* ``Add`` / ``Subtract`` / ``Average`` / ``Concatenate``: sums of independent moments; ``Multiply``: product of
  independent moments; reshaping, flattening, padding, cropping: applied to both.
* a softmax at a classification output is not propagated: the graph returns the moments of the **logits** — with
  their covariance across classes where a Dense layer makes them (its units share their inputs, so the logits move
  together; independent draws would distort the softmax) — and the server draws logit samples from them
  (``mcdrop.serving.core.moments``).

A layer with a moments input and no rule (an RNN, attention, layer normalisation, a custom layer) raises
``NoMomentRule`` naming the layer: the export then ships no moments graph and says why; Monte Carlo is unaffected.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model import keras_internals, random_calls, signature
from mcdrop.pipeline.export.model.random_calls import RandomCall, layer_path
from mcdrop.pipeline.export.model.sites import PATH, PLAIN, DropoutSite

QUADRATURE_POINTS = 16
COVARIANCE_MAX_UNITS = 256
"""Softmax outputs up to this many classes get the logits' full covariance (the server draws from it with a
Cholesky factor per row); wider ones the diagonal."""
VARIANCE_FLOOR = 1e-12
"""Added to a variance before its square root: a unit with no spread (before dropout reaches it) stays finite."""
DROPOUT_LAYERS = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                  keras.layers.SpatialDropout3D, keras.layers.GaussianDropout)  # fmt: skip
RESHAPING_LAYERS = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute, keras.layers.RepeatVector,
                    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
                    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
                    keras.layers.Identity, keras.layers.UpSampling1D, keras.layers.UpSampling2D,
                    keras.layers.UpSampling3D)  # fmt: skip
"""Layers that only move or copy elements (or pad with zeros): applied to the mean and the variance alike."""
AFFINE_LAYERS = (keras.layers.BatchNormalization, keras.layers.Normalization, keras.layers.Rescaling)
ELEMENTWISE_ACTIVATIONS = frozenset({
    "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "swish", "softplus", "softsign", "hard_sigmoid",
    "hard_silu", "hard_swish", "leaky_relu", "relu6", "mish", "exponential", "log_sigmoid", "celu", "sparse_plus",
    "squareplus", "tanh_shrink", "hard_tanh", "soft_shrink", "hard_shrink", "threshold",
})  # fmt: skip
ELEMENTWISE_LAYERS = (keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)
LINK_ACTIVATIONS = ("softmax",)
"""Output activations the moments graph stops before: it returns the logits' moments (classification)."""


class NoMomentRule(ExportError):
    """A layer after the first dropout site has no moment propagation rule: no moments graph for this model."""


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Elementwise mean and variance of a tensor under dropout (independent units assumed), with an optional
    channel-shared part: after spatial dropout one mask multiplies a whole channel, so units of one channel
    co-vary by ``shared_scale * shared[p] * shared[p']`` (``var`` includes this part's own share). A rule that
    knows ``shared`` (a convolution, or a Dense after Flatten) sums it per channel exactly; every other rule sees
    the marginal ``var`` and drops the covariance."""

    mean: tf.Tensor
    var: tf.Tensor
    shared: tf.Tensor | None = None
    shared_scale: float = 0.0
    channels: int | None = None
    """The channel count of ``shared`` once flattened (channel = flat index mod ``channels``)."""
    covariance: tf.Tensor | None = None
    """``[B, O, O]`` across the last axis, where a Dense layer made this tensor: its units share their inputs, so
    they co-vary (kept only for a softmax at the output, whose answer depends on it; otherwise pruned)."""

    def independent_var(self) -> tf.Tensor:
        """``var`` without the channel-shared part's share."""
        if self.shared is None:
            return self.var
        return _non_negative(self.var - self.shared_scale * tf.square(self.shared))

    @staticmethod
    def of(value: Any) -> Gaussian:
        """A constant tensor as a Gaussian of zero variance."""
        return value if isinstance(value, Gaussian) else Gaussian(value, tf.zeros_like(value))

    def map(self, function: Callable[[tf.Tensor], tf.Tensor]) -> Gaussian:
        return Gaussian(function(self.mean), function(self.var))


@dataclasses.dataclass(frozen=True)
class Logits:
    """A model output whose link (softmax) the graph leaves to the server: the logits' moments."""

    gaussian: Gaussian
    link: str


@dataclasses.dataclass(frozen=True)
class OutputMoments:
    """One model output of the moments graph: ``mean`` and ``variance`` of the output (or of its logits)."""

    mean: tf.Tensor
    variance: tf.Tensor
    link: str | None
    """``softmax``: the moments are the logits'; None: the output's own."""
    covariance: tf.Tensor | None = None
    """``[B, C, C]`` of the logits (a softmax output after a Dense layer of at most ``COVARIANCE_MAX_UNITS``)."""


def forward(
    model: keras.Model, sites: Sequence[DropoutSite], x: Any, inactive: Sequence[DropoutSite] = ()
) -> list[OutputMoments]:
    """The moments of every model output (``model.outputs`` order) for input ``x`` (a tensor, or a list of them).

    Raises:
        NoMomentRule: a layer after the first sampled site has no rule (the message names it).
        ExportError: the model cannot be walked.
    """
    keras_internals.check_supported()
    walk = _Walk(model, sites, inactive)
    with random_calls.intercepted(RandomCall.neutral, root=model):
        y = walk.run_model(model, x, enclosing=())
    outputs = signature.flat_outputs(model, y)
    found = []
    for tensor in outputs:
        if isinstance(tensor, Logits):
            g = tensor.gaussian
            found.append(OutputMoments(g.mean, _non_negative(g.var), tensor.link, g.covariance))
        else:
            gaussian = Gaussian.of(tensor)
            found.append(OutputMoments(gaussian.mean, _non_negative(gaussian.var), None))
    return found


class _Walk:
    def __init__(self, model: keras.Model, sites: Sequence[DropoutSite], inactive: Sequence[DropoutSite]) -> None:
        self._sites = {site.owner: site for site in sites}
        self._inactive = {site.owner for site in inactive}
        histories = [getattr(tensor, "_keras_history", None) for tensor in model.outputs]
        self._output_ops = {id(history.operation) for history in histories if history is not None}
        self._sources: dict[int, tuple[Any, frozenset[str]]] = {}
        """id of a stochastic value → (the value, kept alive; the dropout sites whose masks it depends on)."""

    def run_model(self, model: keras.Model, inputs: Any, enclosing: tuple[keras.layers.Layer, ...]) -> Any:
        if isinstance(model, keras.Sequential):
            h = inputs
            for layer in model.layers:
                h = self._call(layer, (h,), {}, enclosing, output=layer is model.layers[-1] and not enclosing)
            return h
        if keras_internals.is_functional(model):

            def caller(op: Any) -> Callable[..., Any]:
                output = not enclosing and id(op) in self._output_ops
                return lambda *a, **k: self._call(op, a, k, enclosing, output=output)

            return keras_internals.run_through_graph(model, inputs, caller)
        raise ExportError(f"Model {model.name!r} is a subclassed {type(model).__name__}: its layers cannot be walked.")

    def _call(
        self, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any], enclosing: tuple[Any, ...], output: bool
    ) -> Any:
        path = layer_path([*enclosing, op])
        values = [v for v in _leaves((args, kwargs)) if tf.is_tensor(v) or isinstance(v, Gaussian)]
        stochastic_input = any(isinstance(v, Gaussian) for v in values)
        sources = [self._sources.get(id(v), (None, frozenset()))[1] for v in values if isinstance(v, Gaussian)]
        if path in self._sites:
            return self._remember(self._dropout(op, path, args, kwargs),
                                  frozenset().union(*sources) | {self._sites[path].name})  # fmt: skip
        self._check_independent(op, path, sources)
        if stochastic_input and type(op) in DROPOUT_LAYERS and len(args) == 1:
            return args[0]  # left out of sampling (--mc-layers) or drawing nothing (rate 0): inference, the identity
        nested_owner = any(owner.startswith(f"{path}/") for owner in self._sites)
        if nested_owner or (stochastic_input and signature.walkable(op)):
            if not signature.walkable(op) or len(args) != 1:
                raise NoMomentRule(f"Layer {path!r} ({type(op).__name__}) holds dropout inside it: no moment rule.")
            return self.run_model(op, args[0], enclosing=(*enclosing, op))
        if not stochastic_input:
            if keras_internals.takes_training_argument(op) or "training" in kwargs:
                kwargs = {**kwargs, "training": False}
            return op(*args, **kwargs)
        return self._remember(_rule(op, path, args, kwargs, output), frozenset().union(*sources))

    def _remember(self, value: Any, sources: frozenset[str]) -> Any:
        for leaf in _leaves(value):
            if not tf.is_tensor(leaf):
                self._sources[id(leaf)] = (leaf, sources)
        return value

    @staticmethod
    def _check_independent(op: Any, path: str, sources: list[frozenset[str]]) -> None:
        """Branches that share a dropout mask co-vary; a layer that joins them (a U-Net's skip concatenation, a
        residual add after dropout) would add their variances as if independent: refused by name, not by a failed
        check against Monte Carlo."""
        for i, first in enumerate(sources):
            for second in sources[i + 1 :]:
                if shared := first & second:
                    raise NoMomentRule(
                        f"Layer {path!r} ({type(op).__name__}) joins branches that share the dropout masks of "
                        f"{', '.join(repr(name) for name in sorted(shared))}, so their units co-vary, which one-pass "
                        "moments (independent units) cannot represent."
                    )

    def _dropout(self, op: Any, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        site = self._sites[path]
        if site.mask_kind == PATH:
            raise NoMomentRule(
                f"Layer {path!r} ({type(op).__name__}) is stochastic depth: one keep flag per sample for a whole "
                "residual branch, so every unit after it is correlated, which one-pass moments (independent units) "
                "cannot represent."
            )
        if type(op) not in DROPOUT_LAYERS or site.mask_kind != PLAIN or len(args) != 1:
            raise NoMomentRule(
                f"Layer {path!r} ({type(op).__name__}) applies dropout inside itself: no moment rule "
                "(only Dropout, SpatialDropout1D/2D/3D and GaussianDropout layers have one)."
            )
        keep = 1.0 - float(site.rate)
        if isinstance(args[0], Gaussian):
            gaussian = args[0]
            var = _non_negative((gaussian.var + tf.square(gaussian.mean)) / keep - tf.square(gaussian.mean))
        else:  # a constant input (the first dropout): Var = x² (1 - q) / q, without a zero variance tensor
            gaussian = Gaussian(args[0], args[0])
            var = tf.square(args[0]) * ((1.0 - keep) / keep)
        spatial = isinstance(op, keras.layers.SpatialDropout1D | keras.layers.SpatialDropout2D)
        if spatial and site.call_shape[:-1] == (1,) * (len(site.call_shape) - 1):
            # One mask per channel: var = Var_in / q (independent) + (1 - q) / q mean² (shared by the channel).
            return Gaussian(gaussian.mean, var, shared=gaussian.mean, shared_scale=(1.0 - keep) / keep)
        return Gaussian(gaussian.mean, var)


def _leaves(structure: Any) -> list[Any]:
    return list(tf.nest.flatten(structure, expand_composites=False))


# Rules ------------------------------------------------------------------------------------------


def propagate(layer: Any, *inputs: Gaussian | tf.Tensor, output: bool = False) -> Gaussian | Logits:
    """The moments of ``layer``'s output for inputs with the given moments (one rule; for tests and tools).

    Raises:
        NoMomentRule: ``layer`` has no rule.
    """
    args = (list(inputs),) if len(inputs) > 1 else tuple(inputs)
    found: Gaussian | Logits = _rule(layer, layer.name, args, {}, output)
    return found


def _rule(op: Any, path: str, args: tuple[Any, ...], kwargs: dict[str, Any], output: bool) -> Any:
    kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
    where = f"Layer {path!r} ({type(op).__name__})"
    if isinstance(op, keras.layers.InputLayer):
        return args[0]
    if type(op) in (keras.layers.Add, keras.layers.Subtract, keras.layers.Average, keras.layers.Concatenate,
                    keras.layers.Multiply):  # fmt: skip
        return _merge(op, [Gaussian.of(v) for v in (args[0] if len(args) == 1 else args)])
    if len(args) != 1 or kwargs:
        raise NoMomentRule(f"{where} takes {len(args)} inputs and {sorted(kwargs)}: no moment rule for that call.")
    gaussian = Gaussian.of(args[0])
    if type(op) is keras.layers.Flatten and gaussian.shared is not None and gaussian.channels is None:
        channels = int(gaussian.mean.shape[-1])
        return Gaussian(op(gaussian.mean), op(gaussian.var), op(gaussian.shared), gaussian.shared_scale, channels)
    if isinstance(op, RESHAPING_LAYERS):
        return gaussian.map(op)
    if isinstance(op, AFFINE_LAYERS):
        return _affine(op, gaussian)
    if type(op) is keras.layers.Dense:
        return _activation(op.activation, _dense(op, gaussian), where, output)
    if type(op) in (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D):
        return _activation(op.activation, _conv(op, gaussian, where), where, output)
    if type(op) in (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D):
        return _activation(op.activation, _depthwise(op, gaussian, where), where, output)
    if type(op) in (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D):
        return _activation(op.activation, _separable(op, gaussian, where), where, output)
    if type(op) in (keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D):
        return _average_pooling(op, gaussian, where)
    if type(op) in (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                    keras.layers.GlobalAveragePooling3D):  # fmt: skip
        count = math.prod(gaussian.mean.shape[1:]) // math.prod(op.compute_output_shape(gaussian.mean.shape)[1:])
        return Gaussian(op(gaussian.mean), op(gaussian.var) / float(count))
    if type(op) in (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D):
        return _max_pooling(op, gaussian, where)
    if type(op) is keras.layers.Activation:
        return _activation(op.activation, gaussian, where, output)
    if type(op) is keras.layers.ReLU:
        plain = op.max_value is None and float(op.negative_slope) == 0.0 and float(op.threshold) == 0.0
        return relu(gaussian) if plain else quadrature(op, gaussian)
    if type(op) is keras.layers.Softmax:
        return _activation(keras.activations.softmax, gaussian, where, output)
    if isinstance(op, ELEMENTWISE_LAYERS):
        return quadrature(op, gaussian)
    raise NoMomentRule(
        f"{where} has no moment propagation rule (it follows a dropout layer). Rules exist for dropout, Dense, "
        "convolutions, pooling, normalisation, elementwise activations, merging and reshaping layers."
    )


def _activation(function: Any, gaussian: Gaussian, where: str, output: bool) -> Any:
    name = getattr(function, "__name__", type(function).__name__)
    if name == "linear":
        return gaussian
    if name == "relu":
        return relu(gaussian)
    if name in LINK_ACTIVATIONS:
        if not output:
            raise NoMomentRule(f"{where} applies {name} before the model's output: no moment rule for it there.")
        return Logits(gaussian, name)
    if name in ELEMENTWISE_ACTIVATIONS:
        return quadrature(function, gaussian)
    raise NoMomentRule(f"{where} has activation {name!r}, which has no moment rule.")


def _dense(op: Any, g: Gaussian) -> Gaussian:
    kernel = tf.convert_to_tensor(op.kernel)

    def matmul(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        if len(x.shape) == 2:
            return tf.matmul(x, w)
        return tf.tensordot(x, w, axes=[[len(x.shape) - 1], [0]])

    mean = matmul(g.mean, kernel)
    if op.use_bias:
        mean = mean + tf.convert_to_tensor(op.bias)
    if g.shared is None or g.channels is None or len(g.mean.shape) != 2:
        return Gaussian(mean, matmul(g.var, tf.square(kernel)), covariance=_dense_covariance(g.var, kernel))
    # After Flatten of a spatially dropped tensor: per channel c, t[b, c, o] = sum_p shared[b, p, c] W[p, c, o]
    # (one batched matmul over channels); the channel-shared variance is shared_scale * sum_c t².
    channels = g.channels
    positions = int(g.mean.shape[-1]) // channels
    units = int(kernel.shape[-1])
    shared = tf.transpose(tf.reshape(g.shared, [-1, positions, channels]), [2, 0, 1])  # [C, B, P]
    weights = tf.transpose(tf.reshape(kernel, [positions, channels, units]), [1, 0, 2])  # [C, P, O]
    per_channel = tf.matmul(shared, weights)  # [C, B, O]
    independent = g.independent_var()
    var = matmul(independent, tf.square(kernel)) + g.shared_scale * tf.reduce_sum(tf.square(per_channel), 0)
    covariance = _dense_covariance(independent, kernel)
    if covariance is not None:  # plus each channel's rank-one share: scale * t_c t_c^T
        by_row = tf.transpose(per_channel, [1, 0, 2])  # [B, C, O]
        covariance = covariance + g.shared_scale * tf.matmul(by_row, by_row, transpose_a=True)
    return Gaussian(mean, var, covariance=covariance)


def _dense_covariance(var: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor | None:
    """Cov(x W) = W^T diag(var) W per row, ``[B, O, O]`` (independent inputs); None for wide or non-2-D layers."""
    if len(var.shape) != 2 or int(kernel.shape[-1]) > COVARIANCE_MAX_UNITS:
        return None
    factor = tf.sqrt(var)[:, :, tf.newaxis] * kernel[tf.newaxis]  # [B, I, O]
    return tf.matmul(factor, factor, transpose_a=True)


def _channels_last(op: Any, where: str) -> None:
    if getattr(op, "data_format", "channels_last") != "channels_last":
        raise NoMomentRule(f"{where} uses data_format={op.data_format!r}. The moment rules expect channels_last.")


def _padding(op: Any, where: str) -> str:
    padding = str(op.padding).upper()
    if padding not in ("SAME", "VALID"):
        raise NoMomentRule(f"{where} uses padding={op.padding!r}. The moment rules handle 'same' and 'valid'.")
    return padding


def _conv(op: Any, g: Gaussian, where: str) -> Gaussian:
    _channels_last(op, where)
    if getattr(op, "groups", 1) != 1:
        raise NoMomentRule(f"{where} is a grouped convolution (groups={op.groups}): no moment rule.")
    kernel = tf.convert_to_tensor(op.kernel)
    padding = _padding(op, where)

    def conv(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        return tf.nn.convolution(x, w, strides=list(op.strides), padding=padding, dilations=list(op.dilation_rate))

    mean = conv(g.mean, kernel)
    if op.use_bias:
        mean = mean + tf.convert_to_tensor(op.bias)
    if g.shared is None or g.channels is not None or len(g.mean.shape) not in (3, 4):
        return Gaussian(mean, conv(g.var, tf.square(kernel)))
    # Spatially dropped input: each input channel's contribution conv(shared[..., c], W[..., c, :]) is one
    # depthwise convolution with channel multiplier C_out; squared and summed over c it is the shared variance.
    one_d = len(g.mean.shape) == 3
    shared, weights = (g.shared[:, tf.newaxis], kernel[tf.newaxis]) if one_d else (g.shared, kernel)
    strides = [1, 1, int(op.strides[0]), 1] if one_d else [1, *map(int, op.strides), 1]
    dilations = [1, int(op.dilation_rate[0])] if one_d else list(op.dilation_rate)
    contributions = tf.nn.depthwise_conv2d(shared, weights, strides, padding, dilations=dilations)
    inputs, outputs = int(kernel.shape[-2]), int(kernel.shape[-1])
    shape = tf.concat([tf.shape(contributions)[:-1], [inputs, outputs]], axis=0)
    shared_var = tf.reduce_sum(tf.square(tf.reshape(contributions, shape)), axis=-2)
    if one_d:
        shared_var = shared_var[:, 0]
    return Gaussian(mean, conv(g.independent_var(), tf.square(kernel)) + g.shared_scale * shared_var)


def _depthwise_op(op: Any, x: tf.Tensor, kernel: tf.Tensor, padding: str) -> tf.Tensor:
    rank = len(x.shape)
    if rank == 3:  # 1-D: as 2-D with a height of one
        strides = [1, 1, int(op.strides[0]), 1]
        y = tf.nn.depthwise_conv2d(x[:, tf.newaxis], kernel[tf.newaxis], strides, padding,
                                   dilations=[1, int(op.dilation_rate[0])])  # fmt: skip
        return y[:, 0]
    strides = [1, *map(int, op.strides), 1]
    return tf.nn.depthwise_conv2d(x, kernel, strides, padding, dilations=list(op.dilation_rate))


def _depthwise(op: Any, g: Gaussian, where: str) -> Gaussian:
    _channels_last(op, where)
    padding = _padding(op, where)
    kernel = tf.convert_to_tensor(op.kernel)
    mean = _depthwise_op(op, g.mean, kernel, padding)
    if op.use_bias:
        mean = mean + tf.convert_to_tensor(op.bias)
    return Gaussian(mean, _depthwise_op(op, g.var, tf.square(kernel), padding))


def _separable(op: Any, g: Gaussian, where: str) -> Gaussian:
    _channels_last(op, where)
    padding = _padding(op, where)
    depthwise = tf.convert_to_tensor(op.depthwise_kernel)
    pointwise = tf.convert_to_tensor(op.pointwise_kernel)
    mean = _depthwise_op(op, g.mean, depthwise, padding)
    var = _depthwise_op(op, g.var, tf.square(depthwise), padding)

    def pointwise_conv(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        return tf.nn.convolution(x, w, padding="VALID")

    mean = pointwise_conv(mean, pointwise)
    if op.use_bias:
        mean = mean + tf.convert_to_tensor(op.bias)
    return Gaussian(mean, pointwise_conv(var, tf.square(pointwise)))


def _affine(op: Any, g: Gaussian) -> Gaussian:
    """An elementwise affine layer (in inference): its offset is its output at 0, its scale the step from 0 to 1,
    both computed on one constant row (folded into constants by the converter)."""
    row = [1, *g.mean.shape[1:]]
    zero = op(tf.zeros(row), training=False) if keras_internals.takes_training_argument(op) else op(tf.zeros(row))
    one = op(tf.ones(row), training=False) if keras_internals.takes_training_argument(op) else op(tf.ones(row))
    scale = one - zero
    if g.shared is not None and g.channels is None:  # a per-channel affine map keeps the channel's shared part
        return Gaussian(g.mean * scale + zero, g.var * tf.square(scale), g.shared * scale, g.shared_scale)
    return Gaussian(g.mean * scale + zero, g.var * tf.square(scale))


def _merge(op: Any, parts: list[Gaussian]) -> Gaussian:
    kind = type(op)
    if kind is keras.layers.Concatenate:
        return Gaussian(op([p.mean for p in parts]), op([p.var for p in parts]))
    if kind is keras.layers.Add:
        return Gaussian(tf.add_n([p.mean for p in parts]), tf.add_n([p.var for p in parts]))
    if kind is keras.layers.Subtract:
        return Gaussian(parts[0].mean - parts[1].mean, parts[0].var + parts[1].var)
    if kind is keras.layers.Average:
        count = float(len(parts))
        return Gaussian(tf.add_n([p.mean for p in parts]) / count, tf.add_n([p.var for p in parts]) / count**2)
    product = parts[0]
    for part in parts[1:]:  # independent factors: Var(XY) = Var X Var Y + Var X E[Y]² + Var Y E[X]²
        var = product.var * part.var + product.var * tf.square(part.mean) + part.var * tf.square(product.mean)
        product = Gaussian(product.mean * part.mean, var)
    return product


def _average_pooling(op: Any, g: Gaussian, where: str) -> Gaussian:
    _channels_last(op, where)
    if _padding(op, where) != "VALID":
        raise NoMomentRule(f"{where} uses padding='same' (edge windows average fewer units): no moment rule.")
    count = float(math.prod(op.pool_size))
    return Gaussian(op(g.mean), op(g.var) / count)


def _max_pooling(op: Any, g: Gaussian, where: str) -> Gaussian:
    """Valid max pooling as the pairwise max of the window's elements (Clark's moments at each step)."""
    _channels_last(op, where)
    spatial = len(g.mean.shape) - 2
    sizes = [int(s) for s in op.pool_size]
    strides = [int(s) for s in op.strides]
    dims = [int(d) for d in g.mean.shape[1:-1]]
    padding = _padding(op, where)
    if padding == "SAME" and any(d % s or p > s for d, p, s in zip(dims, sizes, strides, strict=True)):
        raise NoMomentRule(f"{where} uses padding='same' with windows past the edge: no moment rule.")
    counts = [(d - p) // s + 1 for d, p, s in zip(dims, sizes, strides, strict=True)]
    result: Gaussian | None = None
    for offsets in np.ndindex(*sizes):
        begin = [0, *offsets, 0]
        end = [0, *(o + (c - 1) * s + 1 for o, c, s in zip(offsets, counts, strides, strict=True)), 0]
        element = g.map(functools.partial(_window, begin=begin, end=end, strides=[1, *strides, 1], spatial=spatial))
        result = element if result is None else maximum(result, element)
    assert result is not None
    return result


def _window(x: tf.Tensor, begin: list[int], end: list[int], strides: list[int], spatial: int) -> tf.Tensor:
    """One offset of every pooling window: a strided slice over the spatial axes (batch and channels whole)."""
    whole = 1 | 1 << (spatial + 1)  # begin/end masks: the first and last axes are taken whole
    return tf.strided_slice(x, begin, end, strides, begin_mask=whole, end_mask=whole)


# Gaussian arithmetic ----------------------------------------------------------------------------


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Abramowitz & Stegun 7.1.26: erfc(x) = t (a1 + t (a2 + …)) exp(-x²), t = 1 / (1 + p x), x >= 0; |error| < 1.5e-7.
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def normal_cdfs(z: tf.Tensor, pdf: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Φ(z) and Φ(−z) with builtin ops only (no select: the sign comes from z / |z|); ``pdf`` (φ(z)) saves an EXP
    where the caller has it. The smaller of the two is accurate in its tail (no 1 − Φ cancellation)."""
    magnitude = tf.abs(z)
    t = 1.0 / (1.0 + (_P * _SQRT_HALF) * magnitude)
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    density = normal_pdf(z) if pdf is None else pdf
    tail = (0.5 * math.sqrt(2.0 * math.pi)) * poly * density  # Φ(−|z|): A&S's exp(−x²) is √(2π) φ(z)
    sign = z / (magnitude + 1e-30)
    cdf = 0.5 + sign * (0.5 - tail)
    return cdf, 1.0 - cdf


def normal_pdf(z: tf.Tensor) -> tf.Tensor:
    return _INV_SQRT_2PI * tf.exp(-0.5 * tf.square(z))


def maximum(a: Gaussian, b: Gaussian) -> Gaussian:
    """Moments of max(X, Y) for independent Gaussians (Clark, 1961), in a form without cancellation:
    with d = μx − μy, θ² = σx² + σy², α = d/θ, Φ = Φ(α):
    E = μy + dΦ + θφ(α); Var = σx²Φ + σy²Φ(−α) + d²ΦΦ(−α) + dθφ(α)(Φ(−α) − Φ) − θ²φ(α)²."""
    return _clark(a.mean - b.mean, a.var, b.var + VARIANCE_FLOOR, b.mean)


def relu(g: Gaussian) -> Gaussian:
    """Moments of max(X, 0): Clark's formula with a constant zero (``maximum`` without the zero's ops)."""
    return _clark(g.mean, g.var, VARIANCE_FLOOR, None)


def _clark(d: tf.Tensor, var_a: tf.Tensor, var_b: Any, mean_b: tf.Tensor | None) -> Gaussian:
    theta2 = var_a + var_b
    inverse = tf.math.rsqrt(theta2)
    theta = theta2 * inverse
    alpha = d * inverse
    pdf = normal_pdf(alpha)
    cdf, cdf_negative = normal_cdfs(alpha, pdf)
    theta_pdf = theta * pdf
    mean = d * cdf + theta_pdf if mean_b is None else mean_b + d * cdf + theta_pdf
    var = (var_a * cdf + var_b * cdf_negative + tf.square(d) * cdf * cdf_negative
           + d * theta_pdf * (cdf_negative - cdf) - tf.square(theta_pdf))  # fmt: skip
    return Gaussian(mean, _non_negative(var))


def quadrature(function: Callable[[tf.Tensor], tf.Tensor], g: Gaussian, points: int = QUADRATURE_POINTS) -> Gaussian:
    """Moments of f(X) for an elementwise f by Gauss–Hermite quadrature (exact for polynomials of degree < 2n)."""
    nodes, weights = np.polynomial.hermite.hermgauss(points)
    weights = weights / math.sqrt(math.pi)
    std = tf.sqrt(g.var + VARIANCE_FLOOR)
    values = [function(g.mean + float(math.sqrt(2.0) * node) * std) for node in nodes]
    mean = tf.add_n([float(w) * v for w, v in zip(weights, values, strict=True)])
    var = tf.add_n([float(w) * tf.square(v - mean) for w, v in zip(weights, values, strict=True)])  # two passes
    return Gaussian(mean, var)


def _non_negative(var: tf.Tensor) -> tf.Tensor:
    return tf.maximum(var, 0.0)
