"""The last stage before publishing: the typed ``Manifest`` of the version, built once from every stage's result."""

from __future__ import annotations

import dataclasses
import datetime as dt
from importlib import metadata
from pathlib import Path
from typing import Any

import tensorflow as tf

from mcdrop.pipeline.export.convert.shapes import Shape, device_file
from mcdrop.pipeline.export.model.cost import flops_per_row
from mcdrop.pipeline.export.stages.subject import Subject
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import (
    FULL_INTEGER,
    SERVER_GRAPHS,
    Cost,
    DeviceGraph,
    Fingerprint,
    GraphName,
    GraphSpec,
    Manifest,
    MomentsGraph,
    TensorSpec,
    Variant,
    graph_file,
    sha256_file,
)

__all__ = ["UNKNOWN_PREPROCESSING", "Measurements", "build", "device_graph", "graph_spec", "tensor_spec",
           "verification_inputs"]  # fmt: skip

UNKNOWN_PREPROCESSING = {"applied_in_model": None, "note": "unknown: the model was not trained by mcdrop"}
ACTIVATION_MEMORY_UNIT = (
    "bytes of live activations in one invoke of B rows and T samples: the largest over terms of fixed + B x "
    "per_input_row + B x T x per_sample_row (per op, LiteRT op order; measured without the delegate)"
)


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What the stages found: the verified graphs, their checks and the figures the manifest records."""

    graphs: dict[str, Graph]
    checks: list[dict[str, Any]]
    footprints: dict[str, Any]
    variants: dict[str, Variant]
    device_graphs: tuple[DeviceGraph, ...]
    moments: MomentsGraph | None
    fingerprint: Fingerprint
    timing: dict[str, Any]
    export: dict[str, Any]
    """How the export ran: wall time, peak memory, samples per verification invoke."""


def build(subject: Subject, found: Measurements, staging: Path) -> Manifest:
    """The manifest of the files in ``staging``."""
    options, model = subject.options, subject.model
    flops = flops_per_row(model, {site.owner for site in subject.sites})
    files = sorted(f for f in staging.iterdir() if f.is_file())
    return Manifest(
        name=options.name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        inputs=subject.inputs,
        outputs=subject.outputs,
        preprocessing=(subject.training or {}).get("preprocessing", UNKNOWN_PREPROCESSING),
        dropout_layers=tuple(site.to_manifest() for site in subject.sites),
        stochastic=bool(subject.sites),
        default_samples=options.samples,
        cost=Cost(prefix=flops["prefix"], per_sample=flops["per_sample"]),
        graphs=_graph_specs(subject, found.graphs),
        variants=found.variants,
        verification={
            "passed": True,
            "inputs": verification_inputs(subject),
            "checks": [_without_ops(c) for c in found.checks],
        },
        timing_ms=found.timing,
        files={f.name: sha256_file(f) for f in files},
        file_bytes={f.name: f.stat().st_size for f in files},
        source={"model": str(options.model_path), "sha256": sha256_file(options.model_path), **options.extra_source},
        versions={
            "mcdrop": _version("mcdrop"),
            "keras": _version("keras"),
            "ai_edge_litert": _version("ai-edge-litert"),
            "tensorflow": tf.__version__,
        },
        fingerprint=found.fingerprint,
        device_graphs=found.device_graphs,
        moments=found.moments,
        mc_layers=subject.mc_layers,
        unsampled_dropout_layers=tuple(site.to_manifest() for site in subject.inactive),
        activation_memory={"unit": ACTIVATION_MEMORY_UNIT, **_footprints(found.footprints)},
        export=found.export,
    )


def verification_inputs(subject: Subject) -> dict[str, Any]:
    """Which rows the graphs were verified and fingerprinted on: a data file's (named, with its sha256) or drawn."""
    if subject.data is not None:
        return subject.data.record(len(next(iter(subject.x.values()))))
    drawn = "training statistics" if (subject.training or {}).get("preprocessing") else "standard normal"
    return {"source": "drawn", "distribution": drawn, "seed": subject.options.seed,
            "verification_rows": len(next(iter(subject.x.values())))}  # fmt: skip


def _graph_specs(subject: Subject, graphs: dict[str, Graph]) -> dict[GraphName, GraphSpec]:
    return {GraphName(name): graph_spec(subject, name, graphs[name]) for name in SERVER_GRAPHS if name in graphs}


def graph_spec(subject: Subject, name: str, graph: Graph, quantization: str | None = None) -> GraphSpec:
    """A server graph's entry: file, input tensors, output shapes (``[B, …]`` or ``[T, B, …]``) and ops; a
    quantised variant's also its integer tensors' quantization and, full-integer, the ops left in float."""
    lead: list[int | str] = ["B"] if name == GraphName.DETERMINISTIC else ["T", "B"]
    quantized = dict(zip(graph.output_names, graph.output_quantization(), strict=True))
    dtypes = {out: dtype.name for out, _, dtype in graph.output_specs()}
    outputs = tuple(
        TensorSpec(out, (*lead, *(int(d) for d in tensor.shape[1:])), dtypes.get(out, "float32"), quantized.get(out))
        for out, tensor in zip(subject.output_names, subject.model.outputs, strict=True)
    )
    inputs = tuple(tensor_spec(graph, n) for n in graph.input_names)
    float_ops = tuple(graph.float_ops()) if quantization in FULL_INTEGER else ()
    return GraphSpec(graph_file(name, quantization), inputs, outputs, tuple(graph.ops()), float_ops)


def device_graph(graph: str, shape: Shape, loaded: Graph, quantization: str | None = None) -> DeviceGraph:
    """A device graph's manifest entry."""
    quantized = loaded.output_quantization()
    return DeviceGraph(
        graph=graph,
        file=device_file(graph, shape, quantization),
        batch=shape.batch,
        samples=None if graph == GraphName.DETERMINISTIC else shape.samples,
        inputs=tuple(tensor_spec(loaded, n) for n in loaded.input_names),
        outputs=tuple(
            TensorSpec(name, shape_, dtype.name, q)
            for (name, shape_, dtype), q in zip(loaded.output_specs(), quantized, strict=True)
        ),
        ops=tuple(loaded.ops()),
        float_ops=tuple(loaded.float_ops()) if quantization in FULL_INTEGER else (),
    )


def tensor_spec(graph: Graph, name: str) -> TensorSpec:
    """An input tensor of ``graph`` as the manifest records it."""
    shape, dtype = graph.input_spec(name)
    return TensorSpec(name, tuple(shape), dtype.name, graph.input_quantization(name))


def _footprints(footprints: dict[str, Any]) -> dict[str, Any]:
    return {graph: footprint.as_manifest() for graph, footprint in footprints.items()}


def _without_ops(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if k != "ops"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
