"""Convert a graph function to a LiteRT flatbuffer with stable tensor names.

Conversion freezes the weights into constants first (converting a function
that reads variables leaves ``VAR_HANDLE`` ops and NaN outputs) and allows
builtin ops only, so a graph that would need Flex fails here, loudly. A failure names the Keras layer
whose op the converter refused where it can.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model import keras_internals
from mcdrop.serving.errors import first_line
from mcdrop.serving.models.litert import logical_name
from mcdrop.serving.models.manifest import FULL_INTEGER, QUANTIZATIONS

__all__ = ["QUANTIZATIONS", "SIGNATURE_KEY", "Representative", "conversion_failure", "name_tensors",
           "release_memory", "to_tflite"]  # fmt: skip

SIGNATURE_KEY = "serving_default"
Representative = Callable[[], Iterator[list[Any]]]
"""The converter's representative dataset: yields one list of input arrays (in the function's input order) per step."""


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


def to_tflite(
    function: Any,
    trackable_obj: Any,
    quantization: str | None = None,
    output_names: list[str] | None = None,
    representative: Representative | None = None,
    float_scope: str | None = None,
) -> bytes:
    """Freeze ``function``'s variables and convert it with builtin ops only.

    Args:
        function: a concrete TF function.
        trackable_obj: the model the function belongs to (names its layers in error messages).
        quantization: None (float32), ``float16`` (weights stored as float16), ``dynamic-int8`` (int8 weights,
            activations quantised on the fly), ``int8`` (full integer: int8 weights and activations with ranges
            calibrated on ``representative``; ops without an int8 kernel, such as random draws, stay float32) or
            ``int8-io`` (the same with int8 input and output tensors).
        representative: the representative dataset (needed by ``int8`` and ``int8-io``).
        float_scope: full-integer only: ops under this name scope stay float32 (``keep_float``).
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
    elif quantization in FULL_INTEGER:
        if representative is None:
            raise ExportError(f"Quantization {quantization} needs representative rows.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        if quantization == "int8-io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif quantization is not None:
        raise ExportError(f"Unknown quantization {quantization!r}. Expected one of {', '.join(QUANTIZATIONS)}.")
    try:
        with warnings.catch_warnings():
            # int8-io: the converter takes the input scales from the representative data, as intended
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected", UserWarning)
            if float_scope is not None and quantization in FULL_INTEGER:
                return name_tensors(keep_float(converter, quantization, float_scope), output_names)
            return name_tensors(bytes(converter.convert()), output_names)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(conversion_failure(exc, function.graph, trackable_obj)) from exc
    finally:
        del converter, frozen
        release_memory()


def keep_float(converter: Any, quantization: str, scope: str) -> bytes:
    """Full-integer quantisation that leaves the ops under name scope ``scope`` in float32: calibrate, then quantise
    with those ops' output tensors denylisted (what TensorFlow's quantization debugger does for selective
    quantisation), with the converter's input and output types."""
    from tensorflow.lite.python import convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter._experimental_calibrate_only = True
    calibrated = bytes(converter.convert())
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    subgraph = model.subgraphs[0]
    names = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in subgraph.tensors]
    floated = [name for name in names if any(part.startswith(scope + "/") for part in name.split(";"))]
    floated += [names[int(i)] for i in subgraph.outputs]  # the scope's last ops write the graph's outputs
    io_type = tf.int8 if quantization == "int8-io" else tf.float32
    return bytes(convert.mlir_quantize(calibrated, input_data_type=io_type, output_data_type=io_type,
                                       denylisted_nodes=floated or None))  # fmt: skip


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS: the converter frees gigabytes that glibc would keep
    (ResNet50: 3.5 GB resident after its first conversion, 1.4 GB after this)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def conversion_failure(exc: BaseException, graph: tf.Graph, model: Any) -> str:
    """One line from the converter's many: which op has no builtin kernel, in which layer, and what to do."""
    ops = re.search(r"TF Select ops: ([^\n]+)", str(exc))
    if ops is None:
        return f"TFLite conversion with builtin ops only failed: {first_line(exc, 'unknown error')[:300]}"
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
