"""Quantised variants (``quantize``): convert the server graphs and the device graphs again as ``float16``,
``dynamic-int8``, ``int8`` or ``int8-io``, write them beside float32's and check them.

Full-integer variants calibrate their int8 ranges on the export's real rows (``convert.representative``). Checks
that must pass: no Flex or variable ops, and the Monte-Carlo graph still draws fresh masks at its layers' rates
(quantising must not remove or freeze the randomness). Recorded, not gated: how far the variant's outputs move from
float32's on the verification rows, with the same masks for ``mc_masked``; the agreement of served answers on every
row is measured after the manifest exists (``mcdrop.serving.calibration.agreement``).

A server graph the converter cannot quantise stops the export with the converter's reason; a device graph that
cannot be is left out of the variant and named with the reason (``Variant.unsupported``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.export.convert import functions, representative, shapes, tflite
from mcdrop.pipeline.export.errors import ExportError, verification_failed
from mcdrop.pipeline.export.graphs import summary
from mcdrop.pipeline.export.model.sites import draw_feeds
from mcdrop.pipeline.export.stages.manifest import device_graph, graph_spec
from mcdrop.pipeline.export.stages.server import ServerGraphs
from mcdrop.pipeline.export.stages.subject import Step, Subject
from mcdrop.pipeline.export.verify import common, parity, randomness
from mcdrop.pipeline.export.verify.agreement import agreements, masked_means
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import FULL_INTEGER, SERVER_GRAPHS, DeviceGraph, GraphName, Variant, graph_file

__all__ = ["DROP_FRACTION_SAMPLES", "SAME_MASK_SAMPLES", "convert_and_check"]

SAME_MASK_SAMPLES = 16
"""Masks fed to both mc_masked graphs (float32 and quantised) for the comparison of their MC means."""
DROP_FRACTION_SAMPLES = 256
"""Samples of the variant's mc graph whose masks are counted (per verification row)."""


def convert_and_check(
    subject: Subject,
    server: ServerGraphs,
    device_graphs: tuple[DeviceGraph, ...],
    quantization: str,
    staging: Path,
    step: Step,
    fingerprint_rows: dict[str, np.ndarray],
) -> Variant:
    """Write the ``quantization`` variant of every server and device graph; its manifest entry (without the
    agreement of served answers, added later).

    Raises:
        ExportError: a server graph cannot be converted, or a variant loses its randomness or gains unsupported ops.
    """
    model, sites, names = subject.model, subject.sites, subject.output_names
    full = quantization in FULL_INTEGER
    rows = subject.data.pick(representative.ROWS) if full and subject.data is not None else None

    def convert(function: Any, graph: str, shape: shapes.Shape) -> bytes:
        made = None if rows is None else representative.dataset(function, rows, sites, shape, subject.options.seed)
        outputs = functions.graph_output_names(graph, names, subject.summary)
        scope = summary.SCOPE if graph == GraphName.MC_SUMMARY else None  # the summary arithmetic stays float32
        return tflite.to_tflite(function, model, quantization, output_names=outputs, representative=made,
                                float_scope=scope)  # fmt: skip

    graphs: dict[str, Graph] = {}
    blobs: dict[str, bytes] = {}
    for graph in SERVER_GRAPHS:
        if graph not in server.functions:
            continue
        step(f"quantising {graph} ({quantization})")
        try:
            blobs[graph] = convert(server.functions[graph], graph, shapes.DYNAMIC)
        except ExportError as exc:
            raise ExportError(f"The {quantization} variant of {graph}.tflite cannot be made: {exc}") from exc
        (staging / graph_file(graph, quantization)).write_bytes(blobs[graph])
        graphs[graph] = Graph(blobs[graph])

    devices, unsupported = _device_graphs(subject, server, device_graphs, quantization, staging, step, convert)
    results = [parity.op_check(f"{name}.{quantization}", g.ops(), sites) for name, g in graphs.items()]
    results += [parity.op_check(d.file.removesuffix(".tflite"), list(d.ops), sites) for d in devices]
    if sites:
        step(f"checking the {quantization} variant's randomness")
        probe, found = randomness.mask_probe(blobs[GraphName.MC], sites)
        results.append(randomness.fresh_randomness(probe, common.rows_of(subject.x, slice(0, 2))))
        if found:
            results.append(randomness.drop_fraction(probe, found, subject.x, DROP_FRACTION_SAMPLES, server.chunk,
                                                    names))  # fmt: skip
    if problems := common.failures(results):
        raise verification_failed(problems, f"The {quantization} variant's")
    results += _agreement_checks(subject, server, graphs)
    fingerprint = common.run_graph(graphs[GraphName.DETERMINISTIC], fingerprint_rows, names)
    return Variant(
        name=quantization,
        graphs={GraphName(g): graph_spec(subject, g, loaded, quantization) for g, loaded in graphs.items()},
        device_graphs=devices,
        unsupported=unsupported,
        fingerprint=fingerprint[0].tolist()
        if len(names) == 1
        else {name: output.tolist() for name, output in zip(names, fingerprint, strict=True)},
        representative={}
        if subject.data is None or not full
        else {**subject.data.record(0), "representative_rows": min(representative.ROWS, subject.data.kept)},
        checks=tuple(_without_ops(r) for r in results),
    )


def _device_graphs(
    subject: Subject, server: ServerGraphs, device_graphs: tuple[DeviceGraph, ...], quantization: str,
    staging: Path, step: Step, convert: Any,
) -> tuple[tuple[DeviceGraph, ...], dict[str, str]]:  # fmt: skip
    """The variant of every device graph the converter can quantise, and the reasons of those it cannot."""
    found: list[DeviceGraph] = []
    unsupported: dict[str, str] = {}
    static: dict[shapes.Shape, dict[str, Any]] = {}
    for entry in device_graphs:
        shape = shapes.Shape(entry.batch, entry.samples) if entry.batch is not None else shapes.DYNAMIC
        if shape.batch is not None and shape.samples is None:  # deterministic.bN: T is not part of its name
            shape = next((s for s in subject.options.device_shapes if s.batch == entry.batch), shape)
        if shape == shapes.DYNAMIC:
            function = server.functions[entry.graph]
        else:
            if shape not in static:
                static[shape] = functions.graph_functions(subject.model, subject.sites, subject.inactive,
                                                          subject.summary, shape)  # fmt: skip
            function = static[shape][entry.graph]
        file = shapes.device_file(entry.graph, shape, quantization)
        step(f"quantising {file.removesuffix('.tflite')}")
        try:
            blob = convert(function, entry.graph, shape)
        except ExportError as exc:
            unsupported[file] = str(exc)
            continue
        (staging / file).write_bytes(blob)
        found.append(device_graph(entry.graph, shape, Graph(blob), quantization))
    return tuple(found), unsupported


def _agreement_checks(subject: Subject, server: ServerGraphs, graphs: dict[str, Graph]) -> list[dict[str, Any]]:
    """How far the variant's outputs are from float32's on the verification rows (recorded, always passed)."""
    x, names, tasks = subject.x, subject.output_names, subject.tasks
    deterministic = GraphName.DETERMINISTIC
    reference = common.run_graph(server.graphs[deterministic], x, names)
    quantised = common.run_graph(graphs[deterministic], x, names)
    found = [{"check": "deterministic_agreement", "passed": True, "rows": common.batch_of(x),
              **agreements(reference, quantised, subject.tasks, names)}]  # fmt: skip
    if subject.sites:
        rng = np.random.default_rng(subject.options.seed)
        feeds = draw_feeds(subject.sites, SAME_MASK_SAMPLES, common.batch_of(x), rng)
        masked = GraphName.MC_MASKED
        same = agreements(masked_means(server.graphs[masked], x, feeds, server.chunk, names),
                          masked_means(graphs[masked], x, feeds, server.chunk, names), tasks, names)  # fmt: skip
        found.append({"check": "mc_masked_same_masks", "passed": True, "samples": SAME_MASK_SAMPLES, **same})
    return found


def _without_ops(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if k != "ops"}
