"""How much activation memory a graph needs per row: what sizes the invokes of a request.

An interpreter's working memory is its activations: every tensor that an op produces lives from
that op to its last reader, and LiteRT's arena (and XNNPACK's workspace) reuse the memory of dead
tensors. ``peak_live_bytes`` replays the op order of an interpreter allocated at given input shapes
and returns the largest sum of live tensor bytes at any op — the memory the invoke cannot do
without. ``footprint`` measures the live bytes at every op at three small shapes and splits each op's into
a part per input row (the deterministic prefix, computed once per row) and a part per *sample row*
(each of T x B rows after the first sampled dropout), so that ``Footprint.bytes_for(rows, samples)``
predicts an invoke of any size without running it: early, wide layers dominate small invokes, the
sampled part dominates large ones.

Shapes come from an interpreter without the XNNPACK delegate: a delegated partition does not
update the shapes of its inner tensors when the inputs are resized.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from mcdrop.serving.models.litert import logical_name

__all__ = ["Feeds", "Footprint", "footprint", "peak_live_bytes", "zero_feeds"]

Feeds = Callable[[int, int], Mapping[str, np.ndarray]]
"""``(rows, samples)`` → zero-valued inputs of those shapes for one graph."""


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Activation bytes of one invoke of ``rows`` rows and ``samples`` samples: the largest, over the graph's ops, of
    ``fixed + rows x per_input_row + rows x samples x per_sample_row`` live at that op (``terms``; only the terms
    that no other exceeds in all three are kept)."""

    terms: tuple[tuple[int, int, int], ...]

    def bytes_for(self, rows: int, samples: int) -> int:
        return max(fixed + rows * per_row + rows * samples * per_sample for fixed, per_row, per_sample in self.terms)

    @property
    def per_sample_row(self) -> int:
        """Bytes each further sample row adds once the samples dominate (the largest per-sample term)."""
        return max(term[2] for term in self.terms)

    @property
    def per_input_row(self) -> int:
        return max(term[1] for term in self.terms)

    def as_manifest(self) -> dict[str, Any]:
        return {"per_sample_row": self.per_sample_row, "per_input_row": self.per_input_row,
                "terms": [list(term) for term in self.terms]}  # fmt: skip

    @staticmethod
    def from_manifest(record: Mapping[str, Any]) -> Footprint:
        return Footprint(tuple((int(a), int(b), int(c)) for a, b, c in record["terms"]))


def zero_feeds(inputs: Mapping[str, Sequence[int]], masks: Sequence[tuple[str, Sequence[int], Any]] = ()) -> Feeds:
    """Feeds for ``footprint``: each model input (name → one row's shape) of ``rows`` rows, and each
    ``(name, noise_shape, dtype)`` mask input shaped ``[samples, rows, *noise_shape]`` (``mc_masked.tflite``'s)."""

    def feeds(rows: int, samples: int) -> dict[str, np.ndarray]:
        found = {name: np.zeros((rows, *row_shape), np.float32) for name, row_shape in inputs.items()}
        for name, noise_shape, dtype in masks:
            found[name] = np.zeros((samples, rows, *noise_shape), dtype)
        return found

    return feeds


def footprint(content: bytes, feeds: Feeds) -> Footprint:
    """Measure a graph's activation footprint from its live bytes per op at (rows, samples) = (1, 1), (2, 1) and
    (1, 2): every tensor's size is linear in the rows or in rows x samples, so each op's live sum is too."""
    one = live_bytes_per_op(content, feeds(1, 1))
    two_rows = live_bytes_per_op(content, feeds(2, 1))
    two_samples = live_bytes_per_op(content, feeds(1, 2))
    terms = set()
    for a, b, c in zip(one, two_rows, two_samples, strict=True):
        per_sample = max(0, c - a)
        per_row = max(0, b - a - per_sample)
        terms.add((max(0, a - per_row - per_sample), per_row, per_sample))
    return Footprint(tuple(sorted(_undominated(terms))))


def _undominated(terms: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    return [t for t in terms if not any(o != t and all(x >= y for x, y in zip(o, t, strict=True)) for o in terms)]


def peak_live_bytes(content: bytes, feeds: Mapping[str, np.ndarray]) -> int:
    """The largest sum of live activation bytes at any op, for an invoke with inputs shaped like ``feeds``."""
    return max(live_bytes_per_op(content, feeds))


def live_bytes_per_op(content: bytes, feeds: Mapping[str, np.ndarray]) -> list[int]:
    """Bytes of the activations live while each op runs (its inputs, its outputs and every tensor a later op
    reads), in execution order, for an invoke with inputs shaped like ``feeds``."""
    interpreter = Interpreter(
        model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    inputs = {logical_name(d["name"]): d for d in interpreter.get_input_details()}
    for name, value in feeds.items():
        interpreter.resize_tensor_input(inputs[name]["index"], list(value.shape), strict=False)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    produced = {int(t) for op in ops for t in op["outputs"]}
    # Tensors whose shapes are computed from values (Keras's Dense on a feature map reshapes through a shape it
    # computes, Tensordot) keep placeholder shapes such as [1, 1] until an invoke, and so does everything downstream:
    # ConvNeXt-Tiny's mc_masked at 32 px read 7 KB per sample row before an invoke, 225 KB after. One invoke at
    # these small shapes settles every shape.
    for name, value in feeds.items():  # zeros in the input's own type (token ids are integers)
        interpreter.set_tensor(inputs[name]["index"], np.asarray(value, inputs[name]["dtype"]))
    interpreter.invoke()
    sizes = {int(d["index"]): _bytes(d, interpreter) for d in interpreter.get_tensor_details()}
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    graph_outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    last_use: dict[int, int] = {}
    for position, op in enumerate(ops):
        for tensor in op["inputs"]:
            if int(tensor) in produced:
                last_use[int(tensor)] = position
    ending: dict[int, list[int]] = {}
    for tensor, position in last_use.items():
        if tensor not in graph_outputs:
            ending.setdefault(position, []).append(tensor)
    live = sum(sizes.get(t, 0) for t in graph_inputs)  # set before the invoke, held to its end
    profile = []
    for position, op in enumerate(ops):
        live += sum(sizes.get(int(t), 0) for t in op["outputs"])
        profile.append(live)
        live -= sum(sizes.get(t, 0) for t in ending.get(position, []))
    return profile or [live]


def _shape(interpreter: Any, index: int) -> tuple[int, ...]:
    return tuple(int(d) for d in interpreter._interpreter.TensorSize(index, 0))


def _bytes(detail: Mapping[str, Any], interpreter: Any) -> int:
    shape = _shape(interpreter, int(detail["index"]))
    return int(np.prod(shape)) * np.dtype(detail["dtype"]).itemsize if shape else 0
