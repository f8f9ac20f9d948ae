"""The server's graphs: convert ``deterministic``, ``mc``, ``mc_masked`` (and ``mc_summary`` for devices), write
them to the staging directory and verify them through LiteRT against Keras."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mcdrop.pipeline.export.convert import functions, shapes, tflite
from mcdrop.pipeline.export.errors import verification_failed
from mcdrop.pipeline.export.stages.subject import Step, Subject
from mcdrop.pipeline.export.verify import budget, common, parity, randomness
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import GraphName

__all__ = ["ServerGraphs", "convert_and_verify"]


@dataclasses.dataclass(frozen=True)
class ServerGraphs:
    """The verified dynamic-shape graphs and what their verification found."""

    functions: dict[str, Any]
    """The TensorFlow functions they were converted from (the quantised variants convert them again)."""
    blobs: dict[str, bytes]
    graphs: dict[str, Graph]
    checks: list[dict[str, Any]]
    """Every check's record, all passed."""
    budget: budget.Budget
    chunk: int
    """Samples per verification invoke of the verification rows."""

    def parity_tolerances(self) -> dict[str, float]:
        """The parity tolerance each graph was verified at, by graph name."""
        found = {GraphName.DETERMINISTIC.value: 0.0, GraphName.MC_MASKED.value: 0.0}
        for check in self.checks:
            if check["check"] == "deterministic_parity":
                found[GraphName.DETERMINISTIC] = float(check["tolerance"])
            elif check["check"] == "masked_parity":
                found[GraphName.MC_MASKED] = float(check["tolerance"])
        return found


def convert_and_verify(subject: Subject, staging: Path, step: Step) -> ServerGraphs:
    """Convert, write and verify the dynamic-shape graphs.

    Raises:
        ExportError: a graph cannot be converted or fails a check (every failing check is listed).
    """
    model, sites, inactive = subject.model, subject.sites, subject.inactive
    made = functions.graph_functions(model, sites, inactive, subject.summary)
    blobs: dict[str, bytes] = {}
    for graph, function in made.items():
        step(f"converting {graph}")
        names = functions.graph_output_names(graph, subject.output_names, subject.summary)
        blobs[graph] = tflite.to_tflite(function, model, output_names=names)
        (staging / shapes.graph_file_name(graph, shapes.DYNAMIC)).write_bytes(blobs[graph])

    step("measuring activation memory")
    measured = budget.measure(blobs, sites, subject.row_shapes)
    chunk = measured.samples_per_invoke(len(next(iter(subject.x.values()))))
    step("verifying graphs")
    graphs = {name: Graph(blob) for name, blob in blobs.items()}
    results = [parity.op_check(name, graph.ops(), sites) for name, graph in graphs.items()]
    results.append(parity.deterministic_parity(model, graphs[GraphName.DETERMINISTIC], subject.x))
    if sites:
        results.append(parity.training_mode_parity(model, sites, subject.x, inactive))
        masked = parity.masked_parity(model, graphs[GraphName.MC_MASKED], sites, subject.x, samples=8,
                                      seed=subject.options.seed, chunk=chunk, inactive=inactive)  # fmt: skip
        results.append(masked)
        step(f"verifying graphs: {budget.STAT_SAMPLES} Monte-Carlo samples ({chunk} per invoke)")
        chunks = randomness.Chunks(tflite=chunk, keras=max(1, chunk // budget.KERAS_MEMORY_FACTOR))
        mc = blobs[GraphName.MC]
        results.extend(randomness.mc_statistics(model, mc, sites, subject.x, budget.STAT_SAMPLES, chunks, inactive,
                                                allowance=masked["tolerance"]))  # fmt: skip
    if problems := common.failures(results):
        raise verification_failed(problems)
    return ServerGraphs(made, blobs, graphs, results, measured, chunk)
