"""Graphs for devices: verify ``mc_summary``, then convert, write and verify the static-shape copies of every graph
(``device_shapes``) against the verified dynamic graphs (``mcdrop.pipeline.export.verify.device``)."""

from __future__ import annotations

from pathlib import Path

from mcdrop.pipeline.export.convert import functions, shapes, tflite
from mcdrop.pipeline.export.errors import verification_failed
from mcdrop.pipeline.export.stages.manifest import device_graph
from mcdrop.pipeline.export.stages.server import ServerGraphs
from mcdrop.pipeline.export.stages.subject import Step, Subject
from mcdrop.pipeline.export.verify import budget, common, device, parity
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import DeviceGraph, GraphName

__all__ = ["convert_and_verify"]


def convert_and_verify(
    subject: Subject, server: ServerGraphs, staging: Path, step: Step
) -> tuple[tuple[DeviceGraph, ...], list[dict[str, object]]]:
    """The device graphs' manifest entries and their checks' records.

    Raises:
        ExportError: a device graph cannot be converted or fails a check.
    """
    verifier = device.Verifier(server.graphs, subject.sites, subject.summary, subject.x, subject.options.seed,
                               server.budget.bytes_for, budget.VERIFY_BUDGET_BYTES,
                               server.parity_tolerances())  # fmt: skip
    found: list[DeviceGraph] = []
    results: list[dict[str, object]] = []
    if subject.sites:
        step("verifying mc_summary")
        results.extend(verifier.summary())
        found.append(device_graph(GraphName.MC_SUMMARY, shapes.DYNAMIC, server.graphs[GraphName.MC_SUMMARY]))
    for shape in subject.options.device_shapes:
        label = f"B={shape.batch},T={shape.samples}"
        step(f"converting the static graphs ({label})")
        static = _convert(subject, shape, staging)
        step(f"verifying the static graphs ({label})")
        results.extend(parity.op_check(shapes.device_file(g, shape).removesuffix(".tflite"), s.ops(), subject.sites)
                       for g, s in static.items())  # fmt: skip
        results.extend(verifier.static(shape, static))
        found.extend(device_graph(graph, shape, g) for graph, g in static.items())
    if problems := common.failures(results):
        raise verification_failed(problems)
    return tuple(found), results


def _convert(subject: Subject, shape: shapes.Shape, staging: Path) -> dict[str, Graph]:
    """Every graph of ``shape``, written to ``staging``."""
    made = functions.graph_functions(subject.model, subject.sites, subject.inactive, subject.summary, shape)
    static = {}
    for graph, function in made.items():
        names = functions.graph_output_names(graph, subject.output_names, subject.summary)
        blob = tflite.to_tflite(function, subject.model, output_names=names)
        (staging / shapes.device_file(graph, shape)).write_bytes(blob)
        static[graph] = Graph(blob)
    return static
