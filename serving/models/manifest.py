"""The model-version manifest: the typed contract between the export and every reader of a model version.

``REPO/NAME/VERSION/manifest.json`` is written by ``mcdrop export`` (``Manifest.to_json``) and read
once, at load, by ``Manifest.from_json``, which checks every field a reader relies on and says which
field was wrong, what was expected and what was received. Everything a server needs to run a version
without TensorFlow is here: task, tensor names/shapes/dtypes, dropout sites and their mask shapes,
class labels, cost, observation noise, the fingerprint, and the sha256 of every file (checked before
serving). Informational records (verification checks, timings, preprocessing, source, versions) are
kept as read (``Record``) and written back unchanged; keys this version does not know are kept too,
so a manifest survives a round trip through an older reader.

Manifests of earlier exports load: every field added since schema 1 first shipped has a default
(``mc_layers`` "all", no ``unsampled_dropout_layers``, no ``activation_memory``, ...).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models.calibration import Calibration, ClassificationCalibration, RegressionCalibration
from mcdrop.serving.models.fields import (
    Fields,
    Record,
    arrays,
    batch_shape,
    boolean,
    enum_of,
    integer,
    invalid,
    list_of,
    number,
    omit_none,
    positive_int,
    record,
    string,
    symbolic_dimension,
    unique,
)

__all__ = [
    "FLOAT32",
    "FULL_INTEGER",
    "MANIFEST",
    "QUANTIZATIONS",
    "SCHEMA_VERSION",
    "SERVER_GRAPHS",
    "Cost",
    "DeviceGraph",
    "DropoutSite",
    "Fingerprint",
    "GraphName",
    "GraphSpec",
    "InputSpec",
    "Manifest",
    "ModelTensors",
    "MomentsGraph",
    "NoiseKind",
    "ObservationNoise",
    "OutputSpec",
    "Record",
    "Task",
    "TensorSpec",
    "Variant",
    "graph_file",
    "moments_fields",
    "moments_output_names",
    "read_verified",
    "sha256_file",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class Task(enum.StrEnum):
    """What a model's output means, and so which uncertainty summary it gets."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class GraphName(enum.StrEnum):
    """The graphs of a version: one pass, in-graph random masks, fed masks; ``moments`` (one pass, mean and
    variance) is listed under the manifest's ``moments``, not ``graphs``, so that older servers ignore it."""

    DETERMINISTIC = "deterministic"
    MC = "mc"
    MC_MASKED = "mc_masked"
    MOMENTS = "moments"
    MC_SUMMARY = "mc_summary"
    """For devices: in-graph masks, the uncertainty summary out (listed under ``device_graphs``)."""


SERVER_GRAPHS = (GraphName.DETERMINISTIC, GraphName.MC, GraphName.MC_MASKED)
"""The graphs a server loads (the manifest's ``graphs``); ``mc_summary`` and static-shape graphs are for devices."""

FLOAT32 = "float32"
"""The variant every export has: the graphs under the manifest's ``graphs``."""
QUANTIZATIONS = ("float16", "dynamic-int8", "int8", "int8-io")
"""Quantised variants an export can add (``--quantize``): float16 weights; int8 weights with activations quantised
on the fly; full-integer int8 weights and activations calibrated on representative rows, with float32 (``int8``) or
int8 (``int8-io``) input and output tensors."""
FULL_INTEGER = ("int8", "int8-io")
"""The variants that need representative rows."""


class NoiseKind(enum.StrEnum):
    """How a dropout site's mask is drawn: keep flags (uint8) or standard-normal noise (float32)."""

    BERNOULLI = "bernoulli"
    GAUSSIAN = "gaussian"


def graph_file(graph: str, quantization: str | None = None) -> str:
    """File name of a graph: ``mc.tflite``, or ``mc.float16.tflite`` for a quantised variant."""
    stem = GraphName(graph).value
    return f"{stem}.{quantization}.tflite" if quantization else f"{stem}.tflite"


# The contract -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name, shape (-1 = any size; ``T``/``B`` in sampled outputs) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    quantization: tuple[float, int] | None = None
    """An integer tensor of quantised reals (``--quantize int8-io``): ``(scale, zero_point)``, real = scale x (q -
    zero_point). Servers and clients convert; None: the values are the tensor's own."""

    @staticmethod
    def from_json(value: Any, where: str) -> TensorSpec:
        f = Fields(value, where)
        quantization = f.optional("quantization", _quantization, None)
        return TensorSpec(f.required("name", string), f.required("shape", list_of(symbolic_dimension)),
                          f.required("dtype", string), quantization)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.quantization is not None:
            record["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return record


def _quantization(value: Any, where: str) -> tuple[float, int]:
    f = Fields(value, where)
    scale = f.required("scale", number)
    if not scale > 0:
        raise invalid(f.path("scale"), "a scale > 0", scale)
    return scale, f.required("zero_point", integer)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The model input ``x`` as every graph takes it (float32, batch first)."""

    name: str
    shape: tuple[int, ...]
    """``[-1, ...]``: any batch size, then one row's shape."""
    dtype: str
    model_dtype: str | None = None
    """The Keras model's own input dtype (the graphs cast ``x`` to it)."""
    feature_names: tuple[str, ...] | None = None
    """Training column names, in input order (batch scoring maps table columns by them)."""
    integer_range: tuple[int, int] | None = None
    """``(low, high)`` for token-id models: whole numbers in this range, sent as float32."""
    categories: tuple[str, ...] | None = None
    """A categorical column (``mcdrop train --categorical``): code ``i + 1`` is ``categories[i]``, code 0 any
    category the training data did not hold. Requests send codes; batch scoring maps the column's values."""

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @staticmethod
    def from_json(value: Any, where: str) -> InputSpec:
        f = Fields(value, where)
        shape = f.required("shape", batch_shape)
        bounds = f.optional("integer_range", list_of(integer), None)
        if bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
            raise invalid(f.path("integer_range"), "[low, high] with low <= high", list(bounds))
        return InputSpec(
            name=f.required("name", string),
            shape=shape,
            dtype=f.required("dtype", string),
            model_dtype=f.optional("model_dtype", string, None),
            feature_names=f.optional("feature_names", list_of(string), None),
            integer_range=None if bounds is None else (bounds[0], bounds[1]),
            categories=f.optional("categories", list_of(string), None),
        )

    def to_json(self) -> dict[str, Any]:
        record = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "model_dtype": self.model_dtype,
                  "feature_names": None if self.feature_names is None else list(self.feature_names),
                  "integer_range": None if self.integer_range is None else list(self.integer_range),
                  "categories": None if self.categories is None else list(self.categories)}  # fmt: skip
        return omit_none(record, "model_dtype", "integer_range", "categories")


@dataclasses.dataclass(frozen=True)
class ObservationNoise:
    """Regression: the observation-noise precision tau per output and its variance 1/tau (None: epistemic only)."""

    precision: tuple[float, ...] | None
    variance: tuple[float, ...] | None
    method: str
    """How tau was obtained (or why there is none), for people."""
    details: Record = dataclasses.field(default_factory=dict)
    """Any further keys of the record, kept as written."""

    @staticmethod
    def from_json(value: Any, where: str) -> ObservationNoise:
        f = Fields(value, where)
        variance = f.optional("variance", list_of(number), None)
        if variance is not None and any(not v > 0 for v in variance):
            raise invalid(f.path("variance"), "numbers > 0", list(variance))
        precision = f.optional("precision", list_of(number), None)
        method = f.optional("method", string, "")
        return ObservationNoise(precision, variance, method, f.extra(("precision", "variance", "method")))

    def to_json(self) -> dict[str, Any]:
        listed = {k: None if v is None else list(v) for k, v in (("precision", self.precision),
                                                                  ("variance", self.variance))}  # fmt: skip
        return {**listed, "method": self.method, **self.details}


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One model output: shape ``[-1, ...]``, its task and class labels, target names and (regression) observation
    noise. A single-output model's output is ``y``, with task and labels at the manifest's top level (as every
    manifest before several outputs existed); a model with several lists each under ``outputs`` with its own."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    target_names: tuple[str, ...] | None = None
    observation_noise: ObservationNoise | None = None
    task: Task = Task.REGRESSION
    class_labels: tuple[str, ...] | None = None

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def labels(self) -> list[str]:
        """Class labels, or an empty list."""
        return list(self.class_labels or [])

    @staticmethod
    def from_json(
        value: Any, where: str, task: Task | None = None, labels: tuple[str, ...] | None = None
    ) -> OutputSpec:
        """Read one output; ``task`` and ``labels`` are the top-level ones of a single-output manifest (else the
        output's own fields)."""
        f = Fields(value, where)
        shape = f.required("shape", batch_shape)
        if task is None:
            task = f.required("task", enum_of(Task))
            labels = f.optional("class_labels", list_of(string), None)
        if task == Task.CLASSIFICATION and labels is not None and len(labels) != shape[-1]:
            field = f.path("class_labels") if "class_labels" in f.data else "class_labels"
            raise invalid(field, f"{shape[-1]} labels, one per output", list(labels))
        return OutputSpec(f.required("name", string), shape, f.required("dtype", string),
                          f.optional("target_names", list_of(string), None),
                          f.optional("observation_noise", ObservationNoise.from_json, None), task,
                          labels if task == Task.CLASSIFICATION else None)  # fmt: skip

    def to_json(self, *, with_task: bool = False) -> dict[str, Any]:
        """The output's record; ``with_task`` adds its task and labels (the ``outputs`` list form)."""
        record: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if with_task:
            record |= {"task": self.task.value,
                       "class_labels": None if self.class_labels is None else list(self.class_labels)}  # fmt: skip
        return record | {"target_names": None if self.target_names is None else list(self.target_names),
                         "observation_noise": None if self.observation_noise is None
                         else self.observation_noise.to_json()}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DropoutSite:
    """One dropout site: a dropout layer's call, or one mask of a layer with several (an RNN's input/recurrent)."""

    name: str
    kind: NoiseKind
    rate: float
    noise_shape: tuple[int, ...]
    """One row's mask shape, without the batch dimension."""
    feed_name: str
    """The mask's input name in ``mc_masked.tflite`` (``masked_input``)."""
    layer: str | None = None
    layer_class: str | None = None
    """The Keras class of the layer that owns the site (``class``)."""
    mask_kind: str | None = None
    calls: int | None = None
    input_shape: tuple[int, ...] | None = None
    feed_dtype: str | None = None
    feed_shape: tuple[int | str, ...] | None = None
    """``["T", "B", *noise_shape]``."""

    @staticmethod
    def from_json(value: Any, where: str) -> DropoutSite:
        f = Fields(value, where)
        rate = f.required("rate", number)
        if not 0 <= rate < 1:
            raise invalid(f.path("rate"), "a rate in [0, 1)", rate)
        return DropoutSite(
            name=f.required("name", string),
            kind=f.required("kind", enum_of(NoiseKind)),
            rate=rate,
            noise_shape=f.required("noise_shape", list_of(positive_int)),
            feed_name=f.required("masked_input", string),
            layer=f.optional("layer", string, None),
            layer_class=f.optional("class", string, None),
            mask_kind=f.optional("mask_kind", string, None),
            calls=f.optional("calls", positive_int, None),
            input_shape=f.optional("input_shape", list_of(integer), None),
            feed_dtype=f.optional("masked_input_dtype", string, None),
            feed_shape=f.optional("masked_input_shape", list_of(symbolic_dimension), None),
        )

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": self.name, "layer": self.layer, "class": self.layer_class, "kind": self.kind.value,
            "mask_kind": self.mask_kind, "rate": self.rate, "calls": self.calls,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "noise_shape": list(self.noise_shape), "masked_input": self.feed_name,
            "masked_input_dtype": self.feed_dtype,
            "masked_input_shape": None if self.feed_shape is None else list(self.feed_shape),
        }  # fmt: skip
        return {k: v for k, v in record.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Cost:
    """FLOPs per input row: the prefix before the first sampled site runs once, the rest once per sample."""

    prefix: float
    per_sample: float
    unit: str = "FLOPs per input row (prefix once, per_sample for each of T samples)"

    def flops(self, batch: int, samples: int) -> float:
        """FLOPs of one Monte-Carlo estimate of ``batch`` rows and ``samples`` samples."""
        return batch * self.prefix + batch * samples * self.per_sample

    @staticmethod
    def from_json(value: Any, where: str) -> Cost:
        f = Fields(value, where)
        return Cost(f.required("prefix", number), f.required("per_sample", number),
                    f.optional("unit", string, Cost.unit))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "per_sample": self.per_sample, "unit": self.unit}


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """One graph file: its inputs, outputs (in the order the graph returns them) and op list."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    float_ops: tuple[str, ...] = ()
    """A full-integer variant's ops that still compute in float32 (random draws, say); empty for other graphs."""

    @property
    def output(self) -> TensorSpec:
        """The first (for most models the only) output."""
        return self.outputs[0]

    @staticmethod
    def from_json(value: Any, where: str) -> GraphSpec:
        f = Fields(value, where)
        if "outputs" in f.data:
            outputs = f.required("outputs", list_of(TensorSpec.from_json))
            if not outputs:
                raise invalid(f.path("outputs"), "at least one output", [])
        else:
            outputs = (f.required("output", TensorSpec.from_json),)
        return GraphSpec(f.required("file", string), f.required("inputs", list_of(TensorSpec.from_json)), outputs,
                         f.optional("ops", list_of(string), ()),
                         f.optional("float_ops", list_of(string), ()))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        shown = ({"output": self.outputs[0].to_json()} if len(self.outputs) == 1
                 else {"outputs": [t.to_json() for t in self.outputs]})  # fmt: skip
        record = {"file": self.file, "inputs": [t.to_json() for t in self.inputs], **shown, "ops": list(self.ops)}
        return record | ({"float_ops": list(self.float_ops)} if self.float_ops else {})


@dataclasses.dataclass(frozen=True)
class DeviceGraph:
    """A graph for devices, served by apps rather than by ``mcdrop serve``: ``mc_summary`` (the uncertainty summary
    in one invoke) or a static-shape copy of a graph (``--device-shape B=…,T=…``)."""

    graph: str
    """``deterministic``, ``mc``, ``mc_masked`` or ``mc_summary``."""
    file: str
    batch: int | None
    """The fixed number of rows, or None (dynamic)."""
    samples: int | None
    """The fixed T (no ``samples`` input), or None (dynamic; ``deterministic`` has none)."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...] = ()
    float_ops: tuple[str, ...] = ()
    """A full-integer variant's ops that still compute in float32."""

    @staticmethod
    def from_json(value: Any, where: str) -> DeviceGraph:
        f = Fields(value, where)
        return DeviceGraph(
            graph=f.required("graph", string),
            file=f.required("file", string),
            batch=f.optional("batch", positive_int, None),
            samples=f.optional("samples", positive_int, None),
            inputs=f.required("inputs", list_of(TensorSpec.from_json)),
            outputs=f.required("outputs", list_of(TensorSpec.from_json)),
            ops=f.optional("ops", list_of(string), ()),
            float_ops=f.optional("float_ops", list_of(string), ()),
        )

    def to_json(self) -> dict[str, Any]:
        record = {"graph": self.graph, "file": self.file, "batch": self.batch, "samples": self.samples,
                  "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
                  "ops": list(self.ops)}  # fmt: skip
        return record | ({"float_ops": list(self.float_ops)} if self.float_ops else {})


MOMENTS_APPROXIMATION = (
    "one-pass moment propagation: dropout's mean and variance carried layer by layer assuming independent units "
    "and Gaussian pre-activations; classification draws logit samples from the logits' moments"
)


def moments_fields(output: str, outputs: int, link: str | None) -> tuple[str, str, str]:
    """The moments graph's names of one model output's mean, variance and covariance (if it has one)."""
    prefix = f"{output}/" if outputs > 1 else ""
    stem = "logit_" if link else ""
    return f"{prefix}{stem}mean", f"{prefix}{stem}variance", f"{prefix}{stem}covariance"


def moments_output_names(
    outputs: Sequence[str], links: Sequence[str | None], covariances: Sequence[bool] | None = None
) -> list[str]:
    """The moments graph's output names: ``mean``/``variance`` per model output (``logit_mean``/``logit_variance``,
    and ``logit_covariance`` where it has one, where the graph stops before a softmax), ``OUTPUT/…`` for a model
    with several outputs."""
    names = []
    for index, (output, link) in enumerate(zip(outputs, links, strict=True)):
        mean, variance, covariance = moments_fields(output, len(outputs), link)
        names += [mean, variance, *([covariance] if covariances is not None and covariances[index] else [])]
    return names


@dataclasses.dataclass(frozen=True)
class MomentsGraph:
    """The one-pass moments graph (``moments.tflite``, mode ``moments``): a mean and a variance per output unit (of
    the logits where ``links`` says ``softmax``) in one invoke, or why the version has none."""

    graph: GraphSpec | None
    """None: no moments graph (``reason`` says why); Monte Carlo is unaffected."""
    links: tuple[str | None, ...] = ()
    """Per model output: ``softmax`` (the graph returns the logits' moments) or None (the output's own)."""
    covariances: tuple[bool, ...] = ()
    """Per model output: whether the graph also returns the logits' covariance ``[B, C, C]`` (empty: none)."""
    check: Record = dataclasses.field(default_factory=dict)
    """The export's comparison with Monte Carlo on its verification rows (figures and tolerances)."""
    flops_per_row: float | None = None
    """Compute of one input row (mean and variance through every layer)."""
    reason: str | None = None
    approximation: str = MOMENTS_APPROXIMATION

    @property
    def available(self) -> bool:
        return self.graph is not None

    def output_names(self, outputs: Sequence[str]) -> list[str]:
        """The graph's output names for the model outputs ``outputs`` (see ``moments_output_names``)."""
        links = self.links or (None,) * len(outputs)
        return moments_output_names(outputs, links, self.covariances or None)

    @staticmethod
    def from_json(value: Any, where: str) -> MomentsGraph:
        f = Fields(value, where)
        available = f.required("available", boolean)
        graph = GraphSpec.from_json(f.data, where) if available else None
        no_links: tuple[str | None, ...] = ()
        links = f.optional("links", list_of(lambda v, w: None if v is None else string(v, w)), no_links)
        return MomentsGraph(
            graph=graph,
            links=links,
            covariances=f.optional("covariances", list_of(boolean), ()),
            check=f.record("check"),
            flops_per_row=f.optional("flops_per_row", number, None),
            reason=f.optional("reason", string, None),
            approximation=f.optional("approximation", string, MOMENTS_APPROXIMATION),
        )

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"available": self.available, **(self.graph.to_json() if self.graph else {}),
                                  "links": list(self.links), "covariances": list(self.covariances),
                                  "approximation": self.approximation,
                                  "flops_per_row": self.flops_per_row, "reason": self.reason,
                                  "check": dict(self.check)}  # fmt: skip
        return omit_none(record, "flops_per_row", "reason")


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Outputs of the graphs on fixed inputs (and, for ``mc_masked``, fixed masks): a loaded file must match."""

    seed: int
    rows: int
    deterministic: Any
    """Nested lists of the deterministic graph's output, as JSON holds them; with several outputs, an object of
    them by output name."""
    x: Any = None
    """The fixed inputs (recorded since token-id models need valid ids; older exports drew standard normals);
    with several inputs, an object of them by input name."""
    masks: str | None = None
    """The mask scheme of ``mc_masked`` (``mcdrop.serving.models.masks.SCHEME``); other schemes are not checked."""
    samples: int | None = None
    mc_masked: Any = None

    @staticmethod
    def from_json(value: Any, where: str) -> Fingerprint:
        f = Fields(value, where)
        return Fingerprint(
            seed=f.required("seed", integer),
            rows=f.required("rows", positive_int),
            deterministic=f.required("deterministic", arrays),
            x=None if not f.has("x") else f.required("x", arrays),
            masks=f.optional("masks", string, None),
            samples=f.optional("samples", positive_int, None),
            mc_masked=None if not f.has("mc_masked") else f.required("mc_masked", arrays),
        )

    def to_json(self) -> dict[str, Any]:
        record = {"seed": self.seed, "masks": self.masks, "rows": self.rows, "samples": self.samples, "x": self.x,
                  "deterministic": self.deterministic, "mc_masked": self.mc_masked}  # fmt: skip
        return {k: v for k, v in record.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A quantised copy of the graphs (``mcdrop export --quantize KIND``): served when a request names it (parameter
    ``variant``), and for devices; with how far its answers are from float32's on the export's rows."""

    name: str
    """One of ``QUANTIZATIONS``."""
    graphs: Mapping[GraphName, GraphSpec]
    """The server graphs: ``deterministic``, and with dropout ``mc`` and ``mc_masked``."""
    device_graphs: tuple[DeviceGraph, ...] = ()
    unsupported: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Device graph file → the converter's reason it could not be quantised (that graph stays float32 only)."""
    fingerprint: Any = None
    """The deterministic graph's outputs on the fingerprint's inputs (as ``Fingerprint.deterministic``)."""
    representative: Record = dataclasses.field(default_factory=dict)
    """The rows a full-integer variant's ranges were calibrated on (file, sha256, rows)."""
    checks: tuple[Record, ...] = ()
    """Structural checks (ops, fresh randomness, drop fraction) and agreement on the verification rows."""
    agreement: Record = dataclasses.field(default_factory=dict)
    """Answers against float32's on the export's rows, through the server's own code (``calibration.agreement``)."""

    @staticmethod
    def from_json(value: Any, where: str) -> Variant:
        f = Fields(value, where)
        name = f.required("name", string)
        if name not in QUANTIZATIONS:
            raise invalid(f.path("name"), "one of " + ", ".join(QUANTIZATIONS), name)
        graphs = {
            enum_of(GraphName)(graph, f.path(f"graphs.{graph}")): GraphSpec.from_json(spec, f.path(f"graphs.{graph}"))
            for graph, spec in f.required("graphs", record).items()
        }
        if GraphName.DETERMINISTIC not in graphs:
            raise invalid(f.path("graphs"), "a 'deterministic' graph", sorted(graphs))
        unsupported = f.record("unsupported")
        for key, reason in unsupported.items():
            string(reason, f.path(f"unsupported.{key}"))
        return Variant(
            name=name,
            graphs=graphs,
            device_graphs=f.optional("device_graphs", list_of(DeviceGraph.from_json), ()),
            unsupported=dict(unsupported),
            fingerprint=None if not f.has("fingerprint") else f.required("fingerprint", arrays),
            representative=f.record("representative"),
            checks=f.optional("checks", list_of(record), ()),
            agreement=f.record("agreement"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "graphs": {name.value: spec.to_json() for name, spec in self.graphs.items()},
                "device_graphs": [g.to_json() for g in self.device_graphs], "unsupported": dict(self.unsupported),
                "fingerprint": self.fingerprint, "representative": dict(self.representative),
                "checks": [dict(c) for c in self.checks], "agreement": dict(self.agreement)}  # fmt: skip


class ModelTensors(Protocol):
    """A model's inputs and outputs as the manifest records them (a ``Manifest``, or an export before it has one)."""

    @property
    def inputs(self) -> tuple[InputSpec, ...]: ...

    @property
    def outputs(self) -> tuple[OutputSpec, ...]: ...


_KNOWN = ("schema_version", "name", "created", "task", "class_labels", "input", "output", "inputs", "outputs",
          "preprocessing",
          "dropout_layers", "stochastic", "default_samples", "cost", "graphs", "quantized", "verification",
          "timing_ms", "files", "file_bytes", "source", "versions", "fingerprint", "mc_layers",
          "unsampled_dropout_layers", "activation_memory", "export", "version", "device_graphs", "moments",
          "calibration", "variants")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything an export promises about one model version; see the module docstring."""

    name: str
    inputs: tuple[InputSpec, ...]
    """The model inputs, in the graphs' order: one ``x`` for a single-input model, else the model's input names."""
    outputs: tuple[OutputSpec, ...]
    """The model outputs, in the graphs' order: one ``y`` for a single-output model, else the model's output names."""
    dropout_layers: tuple[DropoutSite, ...]
    """The sampled dropout sites, in call order (their masks are ``mc_masked``'s extra inputs)."""
    default_samples: int
    graphs: Mapping[GraphName, GraphSpec]
    files: Mapping[str, str]
    """File name → sha256 of every file of the version."""
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    stochastic: bool = False
    cost: Cost | None = None
    fingerprint: Fingerprint | None = None
    mc_layers: str = "all"
    """The export's ``--mc-layers`` choice (``all`` for exports from before it existed)."""
    unsampled_dropout_layers: tuple[DropoutSite, ...] = ()
    """Dropout sites the export left out of sampling (they run as in inference)."""
    version: int | None = None
    """Only in KServe's single-model layout, where no folder name says it."""
    file_bytes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    preprocessing: Record = dataclasses.field(default_factory=dict)
    quantized: Record = dataclasses.field(default_factory=dict)
    verification: Record = dataclasses.field(default_factory=dict)
    timing_ms: Record = dataclasses.field(default_factory=dict)
    source: Record = dataclasses.field(default_factory=dict)
    versions: Record = dataclasses.field(default_factory=dict)
    activation_memory: Record | None = None
    export: Record | None = None
    device_graphs: tuple[DeviceGraph, ...] = ()
    """``mc_summary`` and static-shape graphs for devices (``mcdrop export --device-shape``); not loaded by servers."""
    moments: MomentsGraph | None = None
    """The one-pass moments graph, or why there is none; None: exported before mcdrop had it."""
    calibration: Calibration | None = None
    """Abstention thresholds and conformal interval scores from labelled rows (``mcdrop calibrate``); None: not
    calibrated (the server answers without ``abstain`` and with Gaussian intervals)."""
    variants: Mapping[str, Variant] = dataclasses.field(default_factory=dict)
    """Quantised variants by name (``QUANTIZATIONS``); float32 is the manifest's own ``graphs``. Exports before
    variants were served recorded theirs under ``quantized`` (informational: not served)."""
    extra: Record = dataclasses.field(default_factory=dict)
    """Keys this version of mcdrop does not know (from a newer export), kept as written."""

    @property
    def input(self) -> InputSpec:
        """The first (for most models the only) input."""
        return self.inputs[0]

    @property
    def output(self) -> OutputSpec:
        """The first (for most models the only) output."""
        return self.outputs[0]

    @property
    def task(self) -> Task:
        """The first output's task (a model with several outputs has one per output)."""
        return self.outputs[0].task

    @property
    def class_labels(self) -> tuple[str, ...] | None:
        """The first output's class labels."""
        return self.outputs[0].class_labels

    @property
    def labels(self) -> list[str]:
        """The first output's class labels, or an empty list."""
        return self.outputs[0].labels

    def activation_bytes_per_sample_row(self) -> float | None:
        """Bytes of live activations each sample row adds to one Monte-Carlo invoke (``mc_masked``, as measured at
        export); None for a version without dropout or exported before the record existed."""
        graph = (self.activation_memory or {}).get(GraphName.MC_MASKED.value)
        return float(graph["per_sample_row"]) if isinstance(graph, Mapping) and "per_sample_row" in graph else None

    @property
    def single(self) -> bool:
        """One input ``x`` and one output ``y``: the manifest form (and protocol form) of every earlier export."""
        return len(self.inputs) == 1 and len(self.outputs) == 1

    @staticmethod
    def from_json(value: Any) -> Manifest:
        """Parse and check a manifest; raise ``InvalidArgument`` naming the first bad field."""
        f = Fields(value, "")
        schema = f.data.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise invalid("schema_version", str(SCHEMA_VERSION), schema)
        graphs = f.required("graphs", record)
        parsed_graphs = {
            enum_of(GraphName)(name, f"graphs.{name}"): GraphSpec.from_json(spec, f"graphs.{name}")
            for name, spec in graphs.items()
        }
        if GraphName.DETERMINISTIC not in parsed_graphs:
            raise InvalidArgument("Invalid manifest field `graphs`. Expected a 'deterministic' graph. Received: none")
        stochastic = f.optional("stochastic", boolean, False)
        missing = {GraphName.MC, GraphName.MC_MASKED} - set(parsed_graphs)
        if stochastic and missing:
            raise invalid("graphs", "mc and mc_masked graphs for a model with dropout", sorted(parsed_graphs))
        files = f.required("files", record)
        for name, digest in files.items():
            string(digest, f"files.{name}")
        if "inputs" in f.data or "outputs" in f.data:  # several inputs or outputs: each output has its own task
            inputs = f.required("inputs", list_of(InputSpec.from_json))
            outputs = f.required("outputs", list_of(lambda v, w: OutputSpec.from_json(v, w)))
            for key, specs in (("inputs", inputs), ("outputs", outputs)):
                if not specs:
                    raise invalid(key, "at least one", [])
                unique([spec.name for spec in specs], key)
        else:
            task = f.required("task", enum_of(Task))
            labels = f.optional("class_labels", list_of(string), None)
            inputs = (f.required("input", InputSpec.from_json),)
            outputs = (f.required("output", lambda v, w: OutputSpec.from_json(v, w, task, labels)),)
        manifest = Manifest(
            name=f.optional("name", string, ""),
            inputs=inputs,
            outputs=outputs,
            dropout_layers=f.optional("dropout_layers", list_of(DropoutSite.from_json), ()),
            default_samples=f.required("default_samples", positive_int),
            graphs=parsed_graphs,
            files=dict(files),
            created=f.optional("created", string, ""),
            stochastic=stochastic,
            cost=f.optional("cost", Cost.from_json, None),
            fingerprint=f.optional("fingerprint", Fingerprint.from_json, None),
            mc_layers=f.optional("mc_layers", string, "all"),
            unsampled_dropout_layers=f.optional("unsampled_dropout_layers", list_of(DropoutSite.from_json), ()),
            version=f.optional("version", positive_int, None),
            file_bytes={k: integer(v, f"file_bytes.{k}") for k, v in f.record("file_bytes").items()},
            preprocessing=f.record("preprocessing"),
            quantized=f.record("quantized"),
            verification=f.record("verification"),
            timing_ms=f.record("timing_ms"),
            source=f.record("source"),
            versions=f.record("versions"),
            activation_memory=f.optional("activation_memory", record, None),
            export=f.optional("export", record, None),
            device_graphs=f.optional("device_graphs", list_of(DeviceGraph.from_json), ()),
            moments=f.optional("moments", MomentsGraph.from_json, None),
            calibration=f.optional("calibration", Calibration.from_json, None),
            variants=_variants(f, stochastic),
            extra=f.extra(_KNOWN),
        )
        if manifest.calibration is not None:
            _check_calibration(manifest.calibration, manifest.outputs)
        if stochastic != bool(manifest.dropout_layers):
            raise invalid("stochastic", f"{bool(manifest.dropout_layers)} (it has "
                           f"{len(manifest.dropout_layers)} dropout site(s))", stochastic)  # fmt: skip
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON data (what ``from_json`` reads back to an equal ``Manifest``)."""
        record: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            **self._tensors_json(),
            "preprocessing": dict(self.preprocessing),
            "dropout_layers": [d.to_json() for d in self.dropout_layers],
            "stochastic": self.stochastic,
            "default_samples": self.default_samples,
            "cost": None if self.cost is None else self.cost.to_json(),
            "graphs": {name.value: spec.to_json() for name, spec in self.graphs.items()},
            "quantized": dict(self.quantized),
            "verification": dict(self.verification),
            "timing_ms": dict(self.timing_ms),
            "files": dict(self.files),
            "file_bytes": dict(self.file_bytes),
            "source": dict(self.source),
            "versions": dict(self.versions),
            "fingerprint": None if self.fingerprint is None else self.fingerprint.to_json(),
            "mc_layers": self.mc_layers,
            "unsampled_dropout_layers": [d.to_json() for d in self.unsampled_dropout_layers],
            "activation_memory": None if self.activation_memory is None else dict(self.activation_memory),
            "export": None if self.export is None else dict(self.export),
            "version": self.version,
            "device_graphs": [g.to_json() for g in self.device_graphs] or None,
            "moments": None if self.moments is None else self.moments.to_json(),
            "calibration": None if self.calibration is None else self.calibration.to_json(),
            "variants": {name: variant.to_json() for name, variant in self.variants.items()} or None,
        }
        omitted = (
            "cost",
            "fingerprint",
            "activation_memory",
            "export",
            "version",
            "device_graphs",
            "moments",
            "calibration",
            "variants",
        )
        return {**omit_none(record, *omitted), **self.extra}

    def _tensors_json(self) -> dict[str, Any]:
        if self.single:
            return {"task": self.task.value,
                    "class_labels": None if self.class_labels is None else list(self.class_labels),
                    "input": self.input.to_json(), "output": self.output.to_json()}  # fmt: skip
        return {"inputs": [spec.to_json() for spec in self.inputs],
                "outputs": [spec.to_json(with_task=True) for spec in self.outputs]}  # fmt: skip

    @staticmethod
    def load(version_dir: Path) -> Manifest:
        """Read and check ``version_dir/manifest.json``.

        Raises:
            NotFound: there is no manifest.
            InvalidArgument: it is not valid JSON, or a field is missing or wrong (the message names it).
        """
        path = version_dir / MANIFEST
        if not path.is_file():
            raise NotFound(f"No {MANIFEST} in {version_dir}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"{path} is not valid JSON: {exc}") from None
        try:
            return Manifest.from_json(data)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{path}: {exc}") from None

    def write(self, version_dir: Path) -> None:
        """Write ``version_dir/manifest.json``."""
        (version_dir / MANIFEST).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def _variants(f: Fields, stochastic: bool) -> dict[str, Variant]:
    """The ``variants`` section: each under its own name, with the server graphs a version of this kind needs."""
    found = {}
    for key, value in f.record("variants").items():
        variant = Variant.from_json(value, f"variants.{key}")
        if variant.name != key:
            raise invalid(f"variants.{key}.name", repr(key), variant.name)
        missing = {GraphName.MC, GraphName.MC_MASKED} - set(variant.graphs)
        if stochastic and missing:
            raise invalid(f"variants.{key}.graphs", "mc and mc_masked graphs for a model with dropout",
                          sorted(variant.graphs))  # fmt: skip
        found[key] = variant
    return found


def _check_calibration(calibration: Calibration, outputs: Sequence[OutputSpec]) -> None:
    """Every calibrated output exists with the calibrated task, and a conformal record has one list per target."""
    specs = {spec.name: spec for spec in outputs}
    for i, calibrated in enumerate(calibration.outputs):
        where = f"calibration.outputs[{i}]"
        spec = specs.get(calibrated.output)
        if spec is None:
            raise invalid(f"{where}.output", "one of the model's outputs " + ", ".join(specs), calibrated.output)
        task = Task.CLASSIFICATION if isinstance(calibrated, ClassificationCalibration) else Task.REGRESSION
        if spec.task != task:
            raise invalid(f"{where}.task", f"{spec.task.value!r} (output {spec.name!r})", task.value)
        if isinstance(calibrated, RegressionCalibration) and not calibrated.conformal.pooled:
            targets = math.prod(spec.row_shape)
            if len(calibrated.conformal.sorted_scores) != targets:
                raise invalid(f"{where}.conformal.sorted_scores", f"{targets} lists, one per target",
                              len(calibrated.conformal.sorted_scores))  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified(version_dir: Path, name: str, manifest: Manifest) -> bytes:
    """The bytes of ``name``, checked against the manifest's sha256.

    Raises:
        InvalidArgument: the file is not listed, missing, or its digest differs.
    """
    expected = manifest.files.get(name)
    if expected is None:
        raise InvalidArgument(f"{name} is not listed in the manifest of {version_dir}.")
    path = version_dir / name
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path} is listed in the manifest but missing.") from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise InvalidArgument(f"{path} has sha256 {actual[:12]}…. Expected {expected[:12]}… (from the manifest).")
    return content
