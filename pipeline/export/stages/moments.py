"""The one-pass moments graph: convert ``moments.tflite`` and check it against Monte Carlo.

A model without a propagation rule for some layer, or whose check fails, still exports: its manifest records why
there is no moments graph (and no file is written).
"""

from __future__ import annotations

from pathlib import Path

from mcdrop.pipeline.export.convert import functions, tflite
from mcdrop.pipeline.export.graphs.moments import NoMomentRule
from mcdrop.pipeline.export.model.cost import flops_per_row
from mcdrop.pipeline.export.stages.manifest import tensor_spec
from mcdrop.pipeline.export.stages.server import ServerGraphs
from mcdrop.pipeline.export.stages.subject import Step, Subject
from mcdrop.pipeline.export.verify import budget
from mcdrop.pipeline.export.verify import moments as moments_check
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import GraphName, GraphSpec, MomentsGraph, TensorSpec, graph_file
from mcdrop.serving.models.manifest import moments_output_names as output_names

__all__ = ["convert_and_check"]


def convert_and_check(subject: Subject, server: ServerGraphs, staging: Path, step: Step) -> MomentsGraph | None:
    """The moments graph's manifest record; None for a model without dropout, or with ``moments`` off."""
    if not subject.sites or not subject.options.moments:
        return None
    model, sites = subject.model, subject.sites
    flops = _flops(flops_per_row(model, {site.owner for site in sites}))
    step("converting moments")
    try:
        function, links, covariances = functions.moments_function(model, sites, subject.inactive)
    except NoMomentRule as exc:
        return MomentsGraph(graph=None, reason=f"no moments graph: {exc}", flops_per_row=flops)
    names = output_names([spec.name for spec in subject.outputs], links, covariances)
    blob = tflite.to_tflite(function, model, output_names=names)
    graph = Graph(blob)
    step(f"checking moments against {budget.STAT_SAMPLES} Monte-Carlo samples")
    parity = moments_check.graph_parity(graph, function, subject.x)
    checked = moments_check.check(graph, server.graphs[GraphName.MC_MASKED], [site.to_manifest() for site in sites],
                                  subject.x, subject.outputs, links, budget.STAT_SAMPLES, server.chunk,
                                  subject.options.seed)  # fmt: skip
    record = {"parity": parity, **checked}
    if not (parity["passed"] and checked["passed"]):
        problems = list(checked.get("problems", []))
        if not parity["passed"]:
            problems.append(f"graph vs TensorFlow differ by {parity['max_abs_diff']:.3g} "
                            f"(tolerance {parity['tolerance']:.3g})")  # fmt: skip
        reason = "moments graph failed its check against Monte Carlo: " + "; ".join(problems)
        return MomentsGraph(graph=None, links=tuple(links), check=record, reason=reason,
                            flops_per_row=flops)  # fmt: skip
    (staging / graph_file(GraphName.MOMENTS)).write_bytes(blob)
    spec = GraphSpec(
        file=graph_file(GraphName.MOMENTS),
        inputs=tuple(tensor_spec(graph, n) for n in graph.input_names),
        outputs=tuple(TensorSpec(name, shape, dtype.name) for name, shape, dtype in graph.output_specs()),
        ops=tuple(graph.ops()),
    )
    return MomentsGraph(graph=spec, links=tuple(links), covariances=tuple(covariances), check=record,
                        flops_per_row=flops)  # fmt: skip


def _flops(flops: dict[str, float]) -> float:
    """One row of the moments graph: the prefix once, then mean and variance through every later layer."""
    return flops["prefix"] + 2.0 * flops["per_sample"]
