"""The graph functions of a model: the TensorFlow functions the converter turns into LiteRT graphs.

Graphs (``B`` rows, ``T`` samples; shapes without ``B``/``T`` are the model's):

=================  ======================================================  ==================
graph              inputs                                                  output
=================  ======================================================  ==================
deterministic      ``x [B, ...]``                                           ``y [B, ...]``
mc                 ``x [B, ...]``, ``samples`` (int32 scalar T)             ``y [T, B, ...]``
mc_masked          ``x [B, ...]``, one ``mask_*``/``noise_*`` per dropout   ``y [T, B, ...]``
                   site, ``[T, B, *noise_shape]``
mc_summary         ``x [B, ...]``, ``samples``                              the summary's fields
                                                                           (``graphs.summary``)
moments            ``x [B, ...]``                                           per output ``mean``,
                                                                           ``variance`` [,
                                                                           ``covariance``]
=================  ======================================================  ==================

``graph_functions`` makes the first four (only ``deterministic`` for a model without dropout; ``mc_summary``
when given the outputs' summary specs), for a dynamic or a static ``Shape``; ``moments_function`` the last.

``x`` is float32 in every graph; a model whose input is integer (token ids for an
``Embedding``) casts it inside the graph, so every transport sends the same FP32 tensor.

A model with several inputs takes one float32 input per model input instead of ``x``, named
after the Keras inputs (``model.signature.model_inputs``), in ``model.inputs`` order; a model with
several outputs returns one output per model output, in ``model.outputs`` order, and its
output tensors carry the model's output names (``signature.output_names``).

Converting them is ``convert.tflite``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from mcdrop.pipeline.export.convert.shapes import DYNAMIC, Shape
from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.graphs.forward import Deterministic, FedMasks, InGraphRandom, forward
from mcdrop.pipeline.export.graphs.summary import OutputSummary, summarise
from mcdrop.pipeline.export.graphs.summary import output_names as summary_output_names
from mcdrop.pipeline.export.model.signature import model_inputs
from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.serving.errors import first_line
from mcdrop.serving.models.manifest import GraphName


def graph_functions(
    model: keras.Model,
    sites: list[DropoutSite],
    inactive: list[DropoutSite] | None = None,
    summary: Sequence[OutputSummary] = (),
    shape: Shape = DYNAMIC,
) -> dict[str, Any]:
    """Concrete TF functions for each graph; only ``deterministic`` if there is no dropout.

    ``sites`` are the sampled dropout sites; ``inactive`` ones (``--mc-layers``) run as in inference in every graph.
    ``summary`` (one entry per model output) adds ``mc_summary``: in-graph masks, the uncertainty summary out.
    A static ``shape`` fixes the batch of every input and the sample count: ``mc`` and ``mc_summary`` then have
    no ``samples`` input (T is part of the graph) and ``mc_masked``'s masks are ``[T, B, *noise_shape]``.
    """
    inactive = inactive or []
    inputs = model_inputs(model)
    count = len(inputs)
    x_specs = [tf.TensorSpec([shape.batch, *i.row_shape], tf.float32, name=i.name) for i in inputs]

    def model_input(xs: tuple[tf.Tensor, ...]) -> Any:
        cast = [x if i.dtype == tf.float32 else tf.cast(x, i.dtype) for x, i in zip(xs, inputs, strict=True)]
        return cast[0] if count == 1 else cast

    def deterministic(*xs: tf.Tensor) -> Any:
        return forward(model, sites, model_input(xs), Deterministic(), inactive=inactive)

    functions: dict[str, Any] = {GraphName.DETERMINISTIC: _concrete(deterministic, x_specs, GraphName.DETERMINISTIC)}
    if not sites:
        return functions

    def split(args: tuple[tf.Tensor, ...]) -> tuple[tuple[tf.Tensor, ...], tf.Tensor]:
        """The inputs and T: the ``samples`` argument, or the static shape's constant."""
        if shape.samples is not None:
            return args, tf.constant(shape.samples, tf.int32)
        return args[:count], args[count]

    def mc(*args: tf.Tensor) -> Any:
        xs, samples = split(args)
        return forward(model, sites, model_input(xs), InGraphRandom(), samples, inactive)

    def mc_masked(*args: tf.Tensor) -> Any:
        xs, feeds = args[:count], args[count:]
        named = {site.feed_name: feed for site, feed in zip(sites, feeds, strict=True)}
        samples = tf.shape(feeds[0])[0] if shape.samples is None else tf.constant(shape.samples, tf.int32)
        return forward(model, sites, model_input(xs), FedMasks(named), samples, inactive)

    def mc_summary(*args: tf.Tensor) -> Any:
        outputs = mc(*args)
        return summarise(outputs if isinstance(outputs, list) else [outputs], summary)

    samples_specs = [] if shape.samples is not None else [tf.TensorSpec([], tf.int32, name="samples")]
    feed_specs = [tf.TensorSpec([shape.samples, shape.batch, *s.noise_shape], s.feed_dtype, name=s.feed_name)
                  for s in sites]  # fmt: skip
    functions[GraphName.MC] = _concrete(mc, [*x_specs, *samples_specs], GraphName.MC)
    functions[GraphName.MC_MASKED] = _concrete(mc_masked, [*x_specs, *feed_specs], GraphName.MC_MASKED)
    if summary:
        functions[GraphName.MC_SUMMARY] = _concrete(mc_summary, [*x_specs, *samples_specs], GraphName.MC_SUMMARY)
    return functions


def moments_function(
    model: keras.Model, sites: list[DropoutSite], inactive: list[DropoutSite] | None = None
) -> tuple[Any, list[str | None], list[bool]]:
    """The one-pass ``moments`` graph: the model's inputs in, ``mean`` and ``variance`` of every output out (of its
    logits where the output ends in a softmax, then also their ``covariance`` where the model makes one;
    ``graphs.moments``), each output's link (``softmax`` or None) and whether it has a covariance.

    Raises:
        NoMomentRule: a layer after the first sampled site has no propagation rule (the message names it).
    """
    from mcdrop.pipeline.export.graphs import moments

    inputs = model_inputs(model)
    x_specs = [tf.TensorSpec([None, *i.row_shape], tf.float32, name=i.name) for i in inputs]

    links: list[str | None] = []
    covariances: list[bool] = []

    def moments_graph(*xs: tf.Tensor) -> list[tf.Tensor]:
        cast = [x if i.dtype == tf.float32 else tf.cast(x, i.dtype) for x, i in zip(xs, inputs, strict=True)]
        found = moments.forward(model, sites, cast[0] if len(cast) == 1 else cast, inactive or [])
        links[:] = [output.link for output in found]
        covariances[:] = [output.covariance is not None for output in found]
        tensors = []
        for output in found:
            tensors += [output.mean, output.variance, *([] if output.covariance is None else [output.covariance])]
        return tensors

    try:
        function = tf.function(moments_graph, input_signature=x_specs, autograph=False).get_concrete_function()
        return function, list(links), list(covariances)
    except moments.NoMomentRule:
        raise
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"Building the moments graph failed: {first_line(exc)}") from exc


def graph_output_names(graph: str, model_outputs: list[str], summary: Sequence[OutputSummary]) -> list[str]:
    """The output names of ``graph``: the model's outputs (``y`` for one), or the summary's fields."""
    return summary_output_names(summary) if graph == GraphName.MC_SUMMARY else list(model_outputs)


def _concrete(function: Any, signature: list[tf.TensorSpec], graph: str) -> Any:
    """Trace one graph; a failure is one ``ExportError`` line (autograph off: no 'in user code' dumps)."""
    try:
        return tf.function(function, input_signature=signature, autograph=False).get_concrete_function()
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"Building the {graph} graph failed: {first_line(exc)}") from exc
