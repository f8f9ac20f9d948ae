"""Quantised variants for the server (``quantize``): convert the server graphs again, verify their ops and fresh
randomness, and record how far their outputs move from float32 (devices get float32 graphs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.export.convert import tflite
from mcdrop.pipeline.export.errors import verification_failed
from mcdrop.pipeline.export.stages.server import ServerGraphs
from mcdrop.pipeline.export.stages.subject import Subject
from mcdrop.pipeline.export.verify import common, parity, randomness
from mcdrop.pipeline.export.verify.agreement import agreements, masked_means
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import SERVER_GRAPHS, GraphName, graph_file

__all__ = ["SAME_MASK_SAMPLES", "convert_and_compare"]

SAME_MASK_SAMPLES = 16
"""Masks fed to both mc_masked graphs (float32 and quantised) for the comparison of their MC means."""


def convert_and_compare(subject: Subject, server: ServerGraphs, quantization: str, staging: Path) -> dict[str, Any]:
    """Write the ``quantization`` variant of every server graph; its manifest record.

    Raises:
        ExportError: a variant cannot be converted, or loses its randomness or gains unsupported ops.
    """
    model, sites, names, x = subject.model, subject.sites, subject.output_names, subject.x
    record: dict[str, Any] = {"graphs": {}}
    blobs, graphs = {}, {}
    for graph, function in server.functions.items():
        if graph not in SERVER_GRAPHS:
            continue
        blob = blobs[graph] = tflite.to_tflite(function, model, quantization, output_names=names)
        name = graph_file(graph, quantization)
        (staging / name).write_bytes(blob)
        graphs[graph] = Graph(blob)
        record["graphs"][graph] = {"file": name, "ops": graphs[graph].ops()}
    results = [parity.op_check(name, g.ops(), sites) for name, g in graphs.items()]
    if sites:
        probe = randomness.mask_probe(blobs[GraphName.MC], sites)[0]
        results.append(randomness.fresh_randomness(probe, common.rows_of(x, slice(0, 2))))
    if problems := common.failures(results):
        raise verification_failed(problems, f"The {quantization} variant's")
    deterministic = GraphName.DETERMINISTIC
    reference = common.run_graph(server.graphs[deterministic], x, names)
    quantised = common.run_graph(graphs[deterministic], x, names)
    record["deterministic"] = agreements(reference, quantised, subject.tasks, names)
    if sites:
        rng = np.random.default_rng(subject.options.seed)
        feeds = common.draw_feeds(sites, SAME_MASK_SAMPLES, common.batch_of(x), rng)
        masked = GraphName.MC_MASKED
        record["mc_masked_same_masks"] = agreements(
            masked_means(server.graphs[masked], x, feeds, server.chunk, names),
            masked_means(graphs[masked], x, feeds, server.chunk, names),
            subject.tasks,
            names,
        )
    return record
