"""Graph shapes: dynamic (any batch, any sample count) or static for devices (``--device-shape B=1,T=32``)."""

from __future__ import annotations

import dataclasses
import re

from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.manifest import GraphName, graph_file


@dataclasses.dataclass(frozen=True)
class Shape:
    """The fixed batch (B) and sample count (T) of a static-shape graph for devices; ``None``: dynamic."""

    batch: int | None = None
    samples: int | None = None


DYNAMIC = Shape()


_SHAPE = re.compile(r"^\s*B\s*=\s*(\d+)\s*,\s*T\s*=\s*(\d+)\s*$", re.IGNORECASE)


def parse_shape(text: str) -> Shape:
    """``B=1,T=32`` → ``Shape(batch=1, samples=32)``.

    Raises:
        InvalidArgument: not of that form, or B or T below 1.
    """
    match = _SHAPE.match(text)
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise InvalidArgument(
            f"Invalid device shape {text!r}. Expected B=<rows>,T=<samples> with both >= 1, e.g. B=1,T=32."
        )
    return Shape(int(match.group(1)), int(match.group(2)))


def device_file(graph: str, shape: Shape, quantization: str | None = None) -> str:
    """``mc_summary.tflite`` (dynamic), ``mc_masked.b1_t32.tflite``, ``deterministic.b1.tflite``; a quantised
    variant's ``mc_masked.b1_t32.int8.tflite``."""
    suffix = f".{quantization}.tflite" if quantization else ".tflite"
    if shape.batch is None:
        return f"{graph}{suffix}"
    if graph == "deterministic":
        return f"{graph}.b{shape.batch}{suffix}"
    return f"{graph}.b{shape.batch}_t{shape.samples}{suffix}"


def graph_file_name(graph: str, shape: Shape) -> str:
    """Where ``graph`` of ``shape`` is written: a server graph's own name (``graph_file``), else ``device_file``."""
    if shape.batch is None and graph in {GraphName.DETERMINISTIC, GraphName.MC, GraphName.MC_MASKED}:
        return graph_file(graph)
    return device_file(graph, shape)
