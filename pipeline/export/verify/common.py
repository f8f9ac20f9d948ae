"""What every verification check shares: the verification rows (``Feeds``), running a graph or Keras on them,
drawing host masks, reading a graph's inner tensors, and the check records' verdict (``failures``).

Every check returns a JSON-ready record ``{"check": …, "passed": …, …}``; ``failures()`` lists those that did
not pass, and the export publishes nothing if there is any.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.serving.models.litert import Graph

Feeds = dict[str, np.ndarray]
"""The model's inputs by graph input name (``x`` for a single-input model), in ``model.inputs`` order."""


def keras_x(x: Feeds) -> Any:
    """``x`` as ``passes.forward`` and ``keras_inference`` take it: one array, or a list in input order."""
    values = list(x.values())
    return values[0] if len(values) == 1 else values


def rows_of(x: Feeds, rows: slice) -> Feeds:
    return {name: value[rows] for name, value in x.items()}


def batch_of(x: Feeds) -> int:
    return len(next(iter(x.values())))


def joined(outputs: Any, lead: int) -> np.ndarray:
    """A model's outputs as one array: the only output as it is; several flattened past their ``lead`` axes
    ([B] or [T, B]) and concatenated, so every check covers every output at once."""
    arrays = [np.asarray(o) for o in (outputs if isinstance(outputs, list) else [outputs])]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate([a.reshape(*a.shape[:lead], -1) for a in arrays], axis=-1)


def run_graph(graph: Graph, feeds: Feeds, names: list[str]) -> list[np.ndarray]:
    """One invoke; the outputs in the model's order (``names``), then any extra outputs (a ``mask_probe``'s)."""
    outputs = graph.run(feeds)
    if len(names) == 1:
        return outputs
    found = graph.output_names
    if sorted(found[: len(names)]) != sorted(names):
        raise ExportError(f"The graph's outputs are {found[: len(names)]}. Expected {names}.")
    order = [found.index(name) for name in names]
    return [outputs[i] for i in order] + outputs[len(names) :]


def run_masked(graph: Graph, x: Feeds, feeds: dict[str, np.ndarray], chunk: int, names: list[str]) -> np.ndarray:
    """mc_masked.tflite over every sample of ``feeds`` (``[T, B, ...]`` masks), ``chunk`` samples per invoke; the
    outputs ``joined``."""
    samples = next(iter(feeds.values())).shape[0]
    return np.concatenate(
        [
            joined(
                run_graph(graph, {**x, **{name: feed[start : start + chunk] for name, feed in feeds.items()}}, names),
                lead=2,
            )
            for start in range(0, samples, chunk)
        ]
    )


def as_tensors(x: Feeds) -> Any:
    values = [tf.constant(v) for v in x.values()]
    return values[0] if len(values) == 1 else values


def tensor_names(content: bytes) -> set[str]:
    """The last name-scope part of every tensor's name in a LiteRT model."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    return {_name(tensor).rsplit("/", 1)[-1] for tensor in model.subgraphs[0].tensors}


def _name(tensor: Any) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def with_outputs(content: bytes, tensor_names: list[str]) -> bytes:
    """A copy of a LiteRT model with the tensors named ``tensor_names`` (last name-scope part) appended to its
    outputs, in that order: the same ops, weights and random ops, only more tensors handed back."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]
    by_name: dict[str, int] = {}
    for index, tensor in enumerate(subgraph.tensors):
        by_name.setdefault(_name(tensor).rsplit("/", 1)[-1], index)
    missing = [name for name in tensor_names if name not in by_name]
    if missing:
        raise ExportError(f"Tensors {missing} not found in the graph.")
    subgraph.outputs = np.concatenate([np.asarray(subgraph.outputs, np.int32),
                                       np.asarray([by_name[n] for n in tensor_names], np.int32)])  # fmt: skip
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def failures(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check']}{' (' + c['graph'] + ')' if 'graph' in c else ''}: {'; '.join(c['problems'])}"
            for c in checks if not c["passed"]]  # fmt: skip
