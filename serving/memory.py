"""How much activation memory a graph needs per row: what sizes the invokes of a request.

An interpreter's working memory is its activations: every tensor that an op produces lives from
that op to its last reader, and LiteRT's arena (and XNNPACK's workspace) reuse the memory of dead
tensors. ``peak_live_bytes`` replays the op order of an interpreter allocated at given input shapes
and returns the largest sum of live tensor bytes at any op — the memory the invoke cannot do
without. ``footprint`` measures it at three small shapes and splits it into a part per input row
(the deterministic prefix, computed once per row) and a part per *sample row* (each of T x B rows
after the first sampled dropout), so that ``Footprint.bytes_for(rows, samples)`` predicts an invoke
of any size without running it.

Shapes come from an interpreter without the XNNPACK delegate: a delegated partition does not
update the shapes of its inner tensors when the inputs are resized.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

Feeds = Callable[[int, int], Mapping[str, np.ndarray]]
"""``(rows, samples)`` → zero-valued inputs of those shapes for one graph."""


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Activation bytes of one invoke: ``fixed + rows x per_input_row + rows x samples x per_sample_row``."""

    fixed: int
    per_input_row: int
    per_sample_row: int

    def bytes_for(self, rows: int, samples: int) -> int:
        return self.fixed + rows * self.per_input_row + rows * samples * self.per_sample_row

    def as_manifest(self) -> dict[str, int]:
        return {"fixed": self.fixed, "per_input_row": self.per_input_row, "per_sample_row": self.per_sample_row}

    @staticmethod
    def from_manifest(record: Mapping[str, object]) -> Footprint:
        return Footprint(*(int(record[key]) for key in ("fixed", "per_input_row", "per_sample_row")))  # type: ignore[call-overload]


def footprint(content: bytes, feeds: Feeds) -> Footprint:
    """Measure a graph's activation footprint at (rows, samples) = (1, 1), (2, 1) and (1, 2)."""
    one = peak_live_bytes(content, feeds(1, 1))
    two_rows = peak_live_bytes(content, feeds(2, 1))
    two_samples = peak_live_bytes(content, feeds(1, 2))
    per_sample_row = max(0, two_samples - one)
    per_input_row = max(0, two_rows - one - per_sample_row)
    return Footprint(max(0, one - per_input_row - per_sample_row), per_input_row, per_sample_row)


def peak_live_bytes(content: bytes, feeds: Mapping[str, np.ndarray]) -> int:
    """The largest sum of live activation bytes at any op, for an invoke with inputs shaped like ``feeds``."""
    interpreter = Interpreter(
        model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    inputs = {_logical(d["name"]): d for d in interpreter.get_input_details()}
    for name, value in feeds.items():
        interpreter.resize_tensor_input(inputs[name]["index"], list(value.shape), strict=False)
    interpreter.allocate_tensors()
    dynamic = any(-1 in d["shape"] or 0 in d["shape"] for d in interpreter.get_tensor_details() if d["shape"].size)
    if dynamic:  # shapes computed from input values (e.g. a sample count): known only after an invoke
        for name, value in feeds.items():
            interpreter.set_tensor(inputs[name]["index"], value)
        interpreter.invoke()
    sizes = {int(d["index"]): _bytes(d) for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    produced = {int(t) for op in ops for t in op["outputs"]}
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    graph_outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    last_use: dict[int, int] = {}
    for position, op in enumerate(ops):
        for tensor in op["inputs"]:
            if int(tensor) in produced or int(tensor) in graph_inputs:
                last_use[int(tensor)] = position
    live = sum(sizes.get(t, 0) for t in graph_inputs)
    peak = live
    ending: dict[int, list[int]] = {}
    for tensor, position in last_use.items():
        if tensor not in graph_outputs and tensor not in graph_inputs:  # inputs are set before the invoke
            ending.setdefault(position, []).append(tensor)
    for position, op in enumerate(ops):
        live += sum(sizes.get(int(t), 0) for t in op["outputs"])
        peak = max(peak, live)
        live -= sum(sizes.get(t, 0) for t in ending.get(position, []))
    return peak


def _bytes(detail: Mapping[str, object]) -> int:
    shape = np.asarray(detail["shape"])
    return int(np.prod(shape)) * np.dtype(detail["dtype"]).itemsize if shape.size else 0  # type: ignore[call-overload]


def _logical(name: str) -> str:
    from mcdrop.serving.litert import logical_name

    return logical_name(name)
