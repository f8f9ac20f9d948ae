"""Build the three graph functions of a model and convert them to LiteRT flatbuffers.

Graphs (``B`` rows, ``T`` samples; shapes without ``B``/``T`` are the model's):

=================  ======================================================  ==================
graph              inputs                                                  output
=================  ======================================================  ==================
deterministic      ``x [B, ...]``                                           ``y [B, ...]``
mc                 ``x [B, ...]``, ``samples`` (int32 scalar T)             ``y [T, B, ...]``
mc_masked          ``x [B, ...]``, one ``mask_*``/``noise_*`` per dropout   ``y [T, B, ...]``
                   layer, ``[T, B, *noise_shape]``
=================  ======================================================  ==================

Conversion freezes the weights into constants first (converting a function
that reads variables leaves ``VAR_HANDLE`` ops and NaN outputs) and allows
builtin ops only, so a graph that would need Flex fails here, loudly.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from mcdrop.pipeline.export import stochastic
from mcdrop.pipeline.export.stochastic import StochasticLayer
from mcdrop.serving.errors import ExportError

QUANTIZATIONS = ("float16", "dynamic-int8")


def graph_functions(model: keras.Model, layers: list[StochasticLayer]) -> dict[str, Any]:
    """Concrete TF functions for each graph; only ``deterministic`` if there is no dropout."""
    row_shape, dtype = stochastic.input_signature(model)
    x_spec = tf.TensorSpec([None, *row_shape], dtype, name="x")

    def deterministic(x: tf.Tensor) -> tf.Tensor:
        return stochastic.forward(model, x, stochastic.deterministic)

    functions = {"deterministic": tf.function(deterministic, input_signature=[x_spec]).get_concrete_function()}
    if not layers:
        return functions

    def mc(x: tf.Tensor, samples: tf.Tensor) -> tf.Tensor:
        return stochastic.forward(model, x, stochastic.in_graph_random, samples)

    def mc_masked(x: tf.Tensor, *feeds: tf.Tensor) -> tf.Tensor:
        named = {spec.feed_name: feed for spec, feed in zip(layers, feeds, strict=True)}
        samples = tf.shape(feeds[0])[0]
        return stochastic.forward(model, x, stochastic.fed_masks(named, tf.shape(x)[0]), samples)

    samples_spec = tf.TensorSpec([], tf.int32, name="samples")
    feed_specs = [tf.TensorSpec([None, None, *s.noise_shape], s.feed_dtype, name=s.feed_name) for s in layers]
    functions["mc"] = tf.function(mc, input_signature=[x_spec, samples_spec]).get_concrete_function()
    functions["mc_masked"] = tf.function(mc_masked, input_signature=[x_spec, *feed_specs]).get_concrete_function()
    return functions


def to_tflite(function: Any, trackable_obj: Any, quantization: str | None = None) -> bytes:
    """Freeze ``function``'s variables and convert it with builtin ops only.

    Args:
        function: a concrete TF function.
        trackable_obj: the model the function belongs to (keeps the converter on its current path).
        quantization: None (float32), ``float16`` (weights stored as float16) or
            ``dynamic-int8`` (int8 weights, activations quantised on the fly).

    Raises:
        ExportError: the converter failed (e.g. an op with no builtin kernel).
    """
    frozen = convert_variables_to_constants_v2(function)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], trackable_obj)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = False
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization is not None:
        raise ExportError(f"Unknown quantization {quantization!r}. Expected one of {', '.join(QUANTIZATIONS)}.")
    try:
        return bytes(converter.convert())
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"TFLite conversion failed with builtin ops only: {first_line}") from exc
