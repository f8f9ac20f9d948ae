"""Build the three graph functions of a model and convert them to LiteRT flatbuffers.

Graphs (``B`` rows, ``T`` samples; shapes without ``B``/``T`` are the model's):

=================  ======================================================  ==================
graph              inputs                                                  output
=================  ======================================================  ==================
deterministic      ``x [B, ...]``                                           ``y [B, ...]``
mc                 ``x [B, ...]``, ``samples`` (int32 scalar T)             ``y [T, B, ...]``
mc_masked          ``x [B, ...]``, one ``mask_*``/``noise_*`` per dropout   ``y [T, B, ...]``
                   site, ``[T, B, *noise_shape]``
=================  ======================================================  ==================

``x`` is float32 in every graph; a model whose input is integer (token ids for an
``Embedding``) casts it inside the graph, so every transport sends the same FP32 tensor.

A model with several inputs takes one float32 input per model input instead of ``x``, named
after the Keras inputs (``stochastic.model_inputs``), in ``model.inputs`` order; a model with
several outputs returns one output per model output, in ``model.outputs`` order, and its
output tensors carry the model's output names (``stochastic.output_names``).

Conversion freezes the weights into constants first (converting a function
that reads variables leaves ``VAR_HANDLE`` ops and NaN outputs) and allows
builtin ops only, so a graph that would need Flex fails here, loudly.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import re
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from mcdrop.pipeline.export import keras_internals, stochastic
from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.stochastic import DropoutSite
from mcdrop.pipeline.export.summary import OutputSummary, summarise
from mcdrop.pipeline.export.summary import output_names as summary_output_names
from mcdrop.serving.models.litert import logical_name

QUANTIZATIONS = ("float16", "dynamic-int8")


@dataclasses.dataclass(frozen=True)
class Shape:
    """The fixed batch (B) and sample count (T) of a static-shape graph for devices; ``None``: dynamic."""

    batch: int | None = None
    samples: int | None = None


DYNAMIC = Shape()
SIGNATURE_KEY = "serving_default"


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
    inputs = stochastic.model_inputs(model)
    count = len(inputs)
    x_specs = [tf.TensorSpec([shape.batch, *i.row_shape], tf.float32, name=i.name) for i in inputs]

    def model_input(xs: tuple[tf.Tensor, ...]) -> Any:
        cast = [x if i.dtype == tf.float32 else tf.cast(x, i.dtype) for x, i in zip(xs, inputs, strict=True)]
        return cast[0] if count == 1 else cast

    def deterministic(*xs: tf.Tensor) -> Any:
        return stochastic.forward(model, sites, model_input(xs), stochastic.Deterministic(), inactive=inactive)

    functions = {"deterministic": _concrete(deterministic, x_specs, "deterministic")}
    if not sites:
        return functions

    def split(args: tuple[tf.Tensor, ...]) -> tuple[tuple[tf.Tensor, ...], tf.Tensor]:
        """The inputs and T: the ``samples`` argument, or the static shape's constant."""
        if shape.samples is not None:
            return args, tf.constant(shape.samples, tf.int32)
        return args[:count], args[count]

    def mc(*args: tf.Tensor) -> Any:
        xs, samples = split(args)
        return stochastic.forward(model, sites, model_input(xs), stochastic.InGraphRandom(), samples, inactive)

    def mc_masked(*args: tf.Tensor) -> Any:
        xs, feeds = args[:count], args[count:]
        named = {site.feed_name: feed for site, feed in zip(sites, feeds, strict=True)}
        samples = tf.shape(feeds[0])[0] if shape.samples is None else tf.constant(shape.samples, tf.int32)
        return stochastic.forward(model, sites, model_input(xs), stochastic.FedMasks(named), samples, inactive)

    def mc_summary(*args: tf.Tensor) -> Any:
        outputs = mc(*args)
        return summarise(outputs if isinstance(outputs, list) else [outputs], summary)

    samples_specs = [] if shape.samples is not None else [tf.TensorSpec([], tf.int32, name="samples")]
    feed_specs = [tf.TensorSpec([shape.samples, shape.batch, *s.noise_shape], s.feed_dtype, name=s.feed_name)
                  for s in sites]  # fmt: skip
    functions["mc"] = _concrete(mc, [*x_specs, *samples_specs], "mc")
    functions["mc_masked"] = _concrete(mc_masked, [*x_specs, *feed_specs], "mc_masked")
    if summary:
        functions["mc_summary"] = _concrete(mc_summary, [*x_specs, *samples_specs], "mc_summary")
    return functions


def moments_function(
    model: keras.Model, sites: list[DropoutSite], inactive: list[DropoutSite] | None = None
) -> tuple[Any, list[str | None], list[bool]]:
    """The one-pass ``moments`` graph: the model's inputs in, ``mean`` and ``variance`` of every output out (of its
    logits where the output ends in a softmax, then also their ``covariance`` where the model makes one;
    ``mcdrop.pipeline.export.moments``), each output's link (``softmax`` or None) and whether it has a covariance.

    Raises:
        NoMomentRule: a layer after the first sampled site has no propagation rule (the message names it).
    """
    from mcdrop.pipeline.export import moments

    inputs = stochastic.model_inputs(model)
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
        raise ExportError(f"Building the moments graph failed: {stochastic.first_line(exc)}") from exc


def graph_output_names(graph: str, model_outputs: list[str], summary: Sequence[OutputSummary]) -> list[str]:
    """The output names of ``graph``: the model's outputs (``y`` for one), or the summary's fields."""
    return summary_output_names(summary) if graph == "mc_summary" else list(model_outputs)


def name_tensors(content: bytes, output_names: list[str] | None = None) -> bytes:
    """A converted graph with stable names: input tensors named as the function's arguments (``x``, ``samples``,
    ``mask_…``; the converter may call them ``serving_default_x:0``), output tensors ``output_names`` (in output
    order; the converter calls them ``Identity``, ``Identity_1``, …), and one signature, ``serving_default``, with
    the same names — what ``get_signature_runner``, LiteRT.js and mobile wrappers show."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    converted = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = converted.subgraphs[0]
    if output_names is None:
        count = len(subgraph.outputs)
        output_names = ["y"] if count == 1 else [f"output_{i}" for i in range(count)]
    if len(subgraph.outputs) != len(output_names):
        raise ExportError(
            f"The converted graph has {len(subgraph.outputs)} outputs. Expected {len(output_names)}: {output_names}"
        )
    if len(set(subgraph.outputs)) != len(subgraph.outputs):
        raise ExportError(f"The converted graph returns one tensor as several of its outputs {output_names}.")
    input_names = [logical_name(subgraph.tensors[int(i)].name.decode()) for i in subgraph.inputs]
    for index, name in [
        *zip(subgraph.inputs, input_names, strict=True),
        *zip(subgraph.outputs, output_names, strict=True),
    ]:
        subgraph.tensors[int(index)].name = name.encode()

    def tensor_map(name: str, index: int) -> Any:
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name.encode(), int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY.encode()
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(n, i) for n, i in zip(input_names, subgraph.inputs, strict=True)]
    signature.outputs = [tensor_map(n, i) for n, i in zip(output_names, subgraph.outputs, strict=True)]
    converted.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(converted))


def _concrete(function: Any, signature: list[tf.TensorSpec], graph: str) -> Any:
    """Trace one graph; a failure is one ``ExportError`` line (autograph off: no 'in user code' dumps)."""
    try:
        return tf.function(function, input_signature=signature, autograph=False).get_concrete_function()
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"Building the {graph} graph failed: {stochastic.first_line(exc)}") from exc


def to_tflite(
    function: Any, trackable_obj: Any, quantization: str | None = None, output_names: list[str] | None = None
) -> bytes:
    """Freeze ``function``'s variables and convert it with builtin ops only.

    Args:
        function: a concrete TF function.
        trackable_obj: the model the function belongs to (names its layers in error messages).
        quantization: None (float32), ``float16`` (weights stored as float16) or
            ``dynamic-int8`` (int8 weights, activations quantised on the fly).
        output_names: the graph's output names, in output order (``name_tensors``); None: ``y`` for one output,
            else ``output_0``, ``output_1``, ….

    Raises:
        ExportError: the converter failed (e.g. an op with no builtin kernel).
    """
    try:
        frozen = convert_variables_to_constants_v2(function)
    except Exception as exc:  # e.g. a layer run in training mode that updates its own variables
        node = re.search(r"node ([\w./-]+)/(?:Assign|AssignAdd|AssignSub)VariableOp", str(exc))
        layer = _known_layer(node.group(1).split("/"), trackable_obj) if node else None
        where = f"layer {layer!r}" if layer else "a layer"
        raise ExportError(
            f"Freezing the graph's weights failed: {where} updates its variables when it runs"
            " (in training mode, to keep its dropout on). Expected only dropout to change in training mode;"
            " move the dropout out of that layer."
        ) from exc
    # The frozen function alone (no trackable object): the converter then imports its graph directly instead of
    # writing and re-reading a SavedModel, which peaked 0.9 GB higher on ResNet50 (3.83 vs 2.96 GB resident).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Please consider providing the trackable_obj", UserWarning)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
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
        return name_tensors(bytes(converter.convert()), output_names)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(conversion_failure(str(exc), function.graph, trackable_obj)) from exc
    finally:
        del converter, frozen
        release_memory()


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS: the converter frees gigabytes that glibc would keep
    (ResNet50: 3.5 GB resident after its first conversion, 1.4 GB after this)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def conversion_failure(text: str, graph: tf.Graph, model: Any) -> str:
    """One line from the converter's many: which op has no builtin kernel, in which layer, and what to do."""
    ops = re.search(r"TF Select ops: ([^\n]+)", text)
    if ops is None:
        first = text.strip().splitlines()[0] if text.strip() else "unknown error"
        return f"TFLite conversion with builtin ops only failed: {first[:300]}"
    names = [op.strip() for op in ops.group(1).split(",")]
    layer = _layer_of(graph, names[0], model)
    where = f" in layer {layer!r}" if layer else ""
    return (
        f"TFLite conversion with builtin ops only failed: {', '.join(names)}{where} has no builtin LiteRT kernel "
        "(mcdrop serves without TensorFlow, so Flex ops are no option). Rewrite that layer with supported ops "
        "(https://ai.google.dev/edge/litert/models/ops_compatibility) or remove it."
    )


def _layer_of(graph: tf.Graph, op: str, model: Any) -> str | None:
    """The deepest layer name in the scope of the first ``op`` node (``"block_1/inverse/MatrixInverse"``)."""
    graph_def = graph.as_graph_def()
    nodes = [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]
    node = next((n for n in nodes if n.op == op), None)
    if node is None or "/" not in node.name:
        return None
    parts = node.name.split("/")[:-1]
    return _known_layer(parts, model) or parts[-1]


def _known_layer(scopes: list[str], model: Any) -> str | None:
    """The outermost name scope that names a layer of ``model``: the layer a user knows."""
    known = {layer.name for layer in keras_internals.sublayers(model)} if isinstance(model, keras.Model) else set()
    for part in scopes:
        for candidate in (part, re.sub(r"_\d+$", "", part)):  # tf.function name scopes may add "_1"
            if candidate in known:
                return candidate
    return None
