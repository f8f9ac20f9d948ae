"""``mcdrop export``: turn a Keras model with dropout into a verified, versioned set of LiteRT graphs.

Steps: import the user's modules (custom layers) → load the model → find every dropout
mask it draws (refusing randomness it cannot export) → convert deterministic, mc and
mc_masked graphs → verify them through LiteRT (see ``pipeline.export.verify``) → optional quantised variants → write
everything into a staging directory → publish it atomically as the next version.
Nothing is published if any step or check fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import resource
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.export import publish
from mcdrop.pipeline.export.errors import ExportError
from mcdrop.serving.errors import InferenceFailed, InvalidArgument, NotFound
from mcdrop.serving.harness.measure import call_times_ms, percentile
from mcdrop.serving.models.layout import check_model_name
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import (
    Cost,
    DeviceGraph,
    Fingerprint,
    GraphName,
    GraphSpec,
    InputSpec,
    Manifest,
    MomentsGraph,
    ObservationNoise,
    OutputSpec,
    Task,
    TensorSpec,
    graph_file,
    moments_output_names,
    sha256_file,
)

DEFAULT_SAMPLES = 100
STAT_SAMPLES = 2000
VERIFY_BUDGET_BYTES = 256 * 2**20
"""Live activations of one verification invoke: the statistics run their samples in chunks that fit."""
TIMING_BUDGET_MS = 3000.0
KERAS_MEMORY_FACTOR = 4
"""The Keras reference (TensorFlow's graph executor) holds more than LiteRT's planned arena: smaller chunks."""
VERIFY_ROWS = 4
FINGERPRINT_SEED = 12345
FINGERPRINT_ROWS = 4
FINGERPRINT_SAMPLES = 4
SERVER_GRAPHS = ("deterministic", "mc", "mc_masked")
"""The graphs a server loads; ``mc_summary`` and static-shape graphs are for devices (``device_graphs``)."""
UNKNOWN_PREPROCESSING = {"applied_in_model": None, "note": "unknown: the model was not trained by mcdrop"}


@dataclasses.dataclass
class ExportOptions:
    model_path: Path
    repository: Path
    name: str
    samples: int = DEFAULT_SAMPLES
    quantize: tuple[str, ...] = ()
    task: str | None = None
    """``classification`` or ``regression``; for a model with several outputs ``NAME=KIND[,NAME=KIND…]``."""
    labels: list[str] | None = None
    """Class labels (of the model's only classification output)."""
    seed: int = 0
    imports: tuple[str, ...] = ()
    """Modules or .py files to import before loading (the user's registered custom layers)."""
    noise_precision: tuple[float, ...] = ()
    """Observation-noise precision tau per output (regression); overrides the training record's."""
    mc_layers: str = "all"
    """Which dropout sites stay stochastic: ``all``, ``last`` or names (``mcdrop.pipeline.export.selection``)."""
    moments: bool = True
    """Also export the one-pass moments graph where every layer after the first dropout has a propagation rule."""
    device_shapes: tuple[Any, ...] = ()
    """Static shapes (``convert.Shape``, from ``--device-shape B=1,T=32``) of extra graphs for devices."""
    extra_source: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Recorded under ``source`` in the manifest (e.g. the batch job entry that produced it)."""


Step = Callable[[str], None]


def export(options: ExportOptions, step: Step = lambda _: None) -> tuple[int, Manifest]:
    """Export, verify and publish; return ``(version, manifest)``.

    Args:
        options: what to export and where.
        step: called with a short description before each stage (for progress display).

    Raises:
        NotFound / InvalidArgument: the model file or options are unusable.
        ExportError: the model cannot be exported or a graph failed verification.
    """
    from mcdrop.pipeline.export.convert import QUANTIZATIONS

    started = time.perf_counter()
    check_model_name(options.name)
    for quantization in options.quantize:
        if quantization not in QUANTIZATIONS:
            raise InvalidArgument(f"Unknown quantization {quantization!r}. Expected any of {', '.join(QUANTIZATIONS)}.")
    if options.samples < 1:
        raise InvalidArgument(f"Invalid default sample count. Expected an integer >= 1. Received: {options.samples}")
    from mcdrop.pipeline.export import keras_internals

    keras_internals.check_supported()  # before loading: Keras's own loader needs some of them too
    if options.imports:
        from mcdrop.pipeline.export.user_code import import_user_code

        step("importing " + ", ".join(options.imports))
        for target in options.imports:
            import_user_code(target)
    step("loading model")
    model = _load_model(options.model_path)
    training = _training_record(options.model_path)

    import tensorflow as tf

    from mcdrop.pipeline.export import convert, inputs, stochastic, verify
    from mcdrop.pipeline.export import selection as site_selection

    step("finding dropout sites")
    all_sites = stochastic.describe(model)
    mc_layers = site_selection.parse(options.mc_layers)
    upstream = stochastic.upstream_owners(model, all_sites) if mc_layers == site_selection.LAST and all_sites else {}
    chosen = site_selection.select(mc_layers, all_sites, upstream)
    sites, inactive = chosen.sampled, chosen.unsampled
    model_inputs = stochastic.model_inputs(model)
    output_names = stochastic.output_names(model)
    tasks = _tasks(options, model, training, output_names)
    x = inputs.check_inputs(model, model_inputs, training, VERIFY_ROWS, options.seed)
    row_shapes = {spec.name: spec.row_shape for spec in model_inputs}

    outputs = _output_specs(options, model, training, tasks, output_names)
    summary = [_summary_spec(spec) for spec in outputs] if sites else []

    staging = publish.create_staging(options.repository, options.name)
    try:
        functions = convert.graph_functions(model, sites, inactive, summary)
        blobs: dict[str, bytes] = {}
        for graph, function in functions.items():
            step(f"converting {graph}")
            names = convert.graph_output_names(graph, output_names, summary)
            blobs[graph] = convert.to_tflite(function, model, output_names=names)
            (staging / _file(graph, convert.DYNAMIC)).write_bytes(blobs[graph])

        step("measuring activation memory")
        footprints = _footprints(blobs, sites, row_shapes)
        chunk = _chunk_samples(footprints.get("mc_masked"), VERIFY_ROWS)
        step("verifying graphs")
        graphs = {name: Graph(blob) for name, blob in blobs.items()}
        checks = [verify.op_check(name, g.ops(), sites) for name, g in graphs.items()]
        checks.append(verify.deterministic_parity(model, graphs["deterministic"], x))
        if sites:
            checks.append(verify.training_mode_parity(model, sites, x, inactive))
            masked = verify.masked_parity(model, graphs["mc_masked"], sites, x, samples=8, seed=options.seed,
                                          chunk=chunk, inactive=inactive)  # fmt: skip
            checks.append(masked)
            chunks = verify.Chunks(tflite=chunk, keras=max(1, chunk // KERAS_MEMORY_FACTOR))
            step(f"verifying graphs: {STAT_SAMPLES} Monte-Carlo samples ({chunk} per invoke)")
            checks.extend(verify.mc_statistics(model, blobs["mc"], sites, x, STAT_SAMPLES, chunks, inactive,
                                               allowance=masked["tolerance"]))  # fmt: skip
        if problems := verify.failures(checks):
            raise ExportError("Export verification failed; nothing was published:\n  " + "\n  ".join(problems))
        device_graphs = _device_graphs(options, model, sites, inactive, summary, output_names, graphs, checks, x,
                                       footprints, staging, step)  # fmt: skip
        moments_graph = _moments(options, model, sites, inactive, outputs, graphs, x, chunk, staging, step)

        quantized = {}
        for quantization in options.quantize:
            step(f"quantising ({quantization})")
            quantized[quantization] = _quantized_variant(
                model, functions, quantization, graphs, sites, x, tasks, staging, options.seed, chunk
            )

        step("fingerprint")
        fingerprint_x = inputs.check_inputs(model, model_inputs, None, FINGERPRINT_ROWS, FINGERPRINT_SEED)
        fingerprint = _fingerprint(graphs, sites, fingerprint_x, output_names)
        step("timing")
        timing = _timing(graphs, sites, row_shapes, options.samples, _chunk_samples(footprints.get("mc_masked"), 1))
        manifest = dataclasses.replace(
            _manifest(options, model, training, outputs, sites, graphs, checks, quantized, timing, staging),
            fingerprint=fingerprint,
            device_graphs=device_graphs,
            moments=None
            if moments_graph is None
            else dataclasses.replace(moments_graph, flops_per_row=_moments_flops(model, sites)),
            mc_layers=mc_layers,
            unsampled_dropout_layers=tuple(site.to_manifest() for site in inactive),
            activation_memory={
                "unit": "bytes of live activations in one invoke of B rows and T samples: the largest over terms of "
                "fixed + B x per_input_row + B x T x per_sample_row (per op, LiteRT op order; measured without the "
                "delegate)",
                **{graph: fp.as_manifest() for graph, fp in footprints.items()},
            },
            export={
                "wall_s": round(time.perf_counter() - started, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "verification_samples_per_invoke": chunk,
            },
        )
        manifest = dataclasses.replace(manifest, versions={**manifest.versions, "tensorflow": tf.__version__})
        manifest.write(staging)
        step("publishing")
        version = publish.publish(staging)
    except InferenceFailed as exc:
        publish.discard(staging)
        raise ExportError(
            f"Verifying model {options.name!r} ({options.model_path.name}) failed inside LiteRT; nothing was "
            f"published. {exc}. Each verification invoke holds at most {VERIFY_BUDGET_BYTES // 2**20} MiB of "
            "activations; if the machine is short of memory, free some and retry, else report the model."
        ) from exc
    except BaseException:
        publish.discard(staging)
        raise
    return version, manifest


def _file(graph: str, shape: Any) -> str:
    from mcdrop.pipeline.export.device import device_file

    return graph_file(graph) if graph in SERVER_GRAPHS and shape.batch is None else device_file(graph, shape)


def _summary_spec(output: OutputSpec) -> Any:
    """What ``mc_summary`` needs of an output: its name, task and observation-noise variance."""
    from mcdrop.pipeline.export.summary import OutputSummary

    noise = output.observation_noise
    variance = None if noise is None or noise.variance is None else tuple(float(v) for v in noise.variance)
    return OutputSummary(output.name, output.task.value, variance)


def _device_graphs(
    options: ExportOptions,
    model: Any,
    sites: list[Any],
    inactive: list[Any],
    summary: list[Any],
    output_names: list[str],
    graphs: dict[str, Graph],
    checks: list[dict[str, Any]],
    x: dict[str, np.ndarray],
    footprints: dict[str, Any],
    staging: Path,
    step: Step,
) -> tuple[DeviceGraph, ...]:
    """Verify ``mc_summary`` and convert and verify the static-shape graphs of ``options.device_shapes``; append
    their checks to ``checks`` and return their manifest entries. Raises ``ExportError`` if a check fails."""
    from mcdrop.pipeline.export import convert, device, verify

    masked = footprints.get("mc_masked")
    tolerances = {c["check"].removesuffix("_parity"): float(c["tolerance"]) for c in checks
                  if c["check"] in ("deterministic_parity", "masked_parity")}  # fmt: skip
    tolerances["mc_masked"] = tolerances.pop("masked", 0.0)
    verifier = device.Verifier(graphs, sites, summary, x, options.seed,
                               masked.bytes_for if masked else (lambda rows, samples: 0),
                               VERIFY_BUDGET_BYTES, tolerances)  # fmt: skip
    found = []
    if sites:
        step("verifying mc_summary")
        checks.extend(verifier.summary())
        found.append(_device_graph("mc_summary", convert.DYNAMIC, graphs["mc_summary"]))
    for shape in options.device_shapes:
        label = f"B={shape.batch},T={shape.samples}"
        step(f"converting the static graphs ({label})")
        functions = convert.graph_functions(model, sites, inactive, summary, shape)
        static = {}
        for graph, function in functions.items():
            blob = convert.to_tflite(function, model, output_names=convert.graph_output_names(graph, output_names,
                                                                                              summary))  # fmt: skip
            (staging / device.device_file(graph, shape)).write_bytes(blob)
            static[graph] = Graph(blob)
        step(f"verifying the static graphs ({label})")
        checks.extend(verify.op_check(device.device_file(g, shape).removesuffix(".tflite"), s.ops(), sites)
                      for g, s in static.items())  # fmt: skip
        checks.extend(verifier.static(shape, static))
        found.extend(_device_graph(graph, shape, g) for graph, g in static.items())
    if problems := verify.failures(checks):
        raise ExportError("Export verification failed; nothing was published:\n  " + "\n  ".join(problems))
    return tuple(found)


def _moments(
    options: ExportOptions,
    model: Any,
    sites: list[Any],
    inactive: list[Any],
    outputs: tuple[OutputSpec, ...],
    graphs: dict[str, Graph],
    x: dict[str, np.ndarray],
    chunk: int,
    staging: Path,
    step: Step,
) -> MomentsGraph | None:
    """Convert and check ``moments.tflite``; a model without a rule for some layer, or whose check fails, gets a
    record saying why (and no file). None: no dropout, or ``--no-moments``."""
    if not sites or not options.moments:
        return None
    from mcdrop.pipeline.export import convert, moments_check
    from mcdrop.pipeline.export.moments import NoMomentRule

    step("converting moments")
    try:
        function, links, covariances = convert.moments_function(model, sites, inactive)
    except NoMomentRule as exc:
        return MomentsGraph(graph=None, reason=f"no moments graph: {exc}")
    names = moments_output_names([spec.name for spec in outputs], links, covariances)
    blob = convert.to_tflite(function, model, output_names=names)
    graph = Graph(blob)
    step(f"checking moments against {STAT_SAMPLES} Monte-Carlo samples")
    parity = moments_check.graph_parity(graph, function, x)
    manifest_sites = [site.to_manifest() for site in sites]
    checked = moments_check.check(graph, graphs["mc_masked"], manifest_sites, x, outputs, links, STAT_SAMPLES, chunk,
                                  options.seed)  # fmt: skip
    kept_links, kept_covariances = tuple(links), tuple(covariances)
    record = {"parity": parity, **checked}
    if not (parity["passed"] and checked["passed"]):
        problems = checked.get("problems", []) + (
            []
            if parity["passed"]
            else [f"graph vs TensorFlow differ by {parity['max_abs_diff']:.3g} (tolerance {parity['tolerance']:.3g})"]
        )
        return MomentsGraph(
            graph=None,
            links=tuple(links),
            check=record,
            reason="moments graph failed its check against Monte Carlo: " + "; ".join(problems),
        )
    (staging / graph_file("moments")).write_bytes(blob)
    spec = GraphSpec(
        file=graph_file("moments"),
        inputs=tuple(_tensor_spec(graph, n) for n in graph.input_names),
        outputs=tuple(TensorSpec(name, shape, dtype.name) for name, shape, dtype in graph.output_specs()),
        ops=tuple(graph.ops()),
    )
    return MomentsGraph(graph=spec, links=kept_links, covariances=kept_covariances, check=record)


def _moments_flops(model: Any, sites: list[Any]) -> float:
    """One row of the moments graph: the prefix once, then mean and variance through every later layer."""
    cost = _cost(model, sites)
    return cost.prefix + 2.0 * cost.per_sample


def _device_graph(graph: str, shape: Any, loaded: Graph) -> DeviceGraph:
    from mcdrop.pipeline.export.device import device_file

    return DeviceGraph(
        graph=graph,
        file=device_file(graph, shape),
        batch=shape.batch,
        samples=None if graph == "deterministic" else shape.samples,
        inputs=tuple(_tensor_spec(loaded, n) for n in loaded.input_names),
        outputs=tuple(TensorSpec(name, shape_, dtype.name) for name, shape_, dtype in loaded.output_specs()),
        ops=tuple(loaded.ops()),
    )


def _footprints(blobs: dict[str, bytes], sites: list[Any], row_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Activation bytes per row of the deterministic and the fed-mask graph (``mcdrop.serving.models.memory``)."""
    from mcdrop.serving.models.memory import footprint, zero_feeds

    found = {"deterministic": footprint(blobs["deterministic"], zero_feeds(row_shapes))}
    if sites:
        masks = [(site.feed_name, site.noise_shape, site.feed_dtype.as_numpy_dtype) for site in sites]
        found["mc_masked"] = footprint(blobs["mc_masked"], zero_feeds(row_shapes, masks))
    return found


def _chunk_samples(masked: Any, rows: int) -> int:
    """Samples per verification invoke of ``rows`` rows that keep its activations within ``VERIFY_BUDGET_BYTES``."""
    if masked is None:
        return STAT_SAMPLES
    from mcdrop.serving.core import invokes

    what = "The verification invoke of mc.tflite"
    split = invokes.plan(masked, rows, STAT_SAMPLES, max(VERIFY_BUDGET_BYTES, masked.bytes_for(rows, 1)), what)
    return split.samples


def _load_model(path: Path) -> Any:
    if not path.is_file():
        raise NotFound(f"Model file not found: {path}")
    if path.suffix not in (".keras", ".h5"):
        raise InvalidArgument(f"Unsupported model file {path.name}. Expected a Keras 3 .keras (or legacy .h5) file.")
    import keras

    from mcdrop.pipeline.export.user_code import IMPORT_HINT

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        unknown_class = any(hint in str(exc) for hint in ("Could not locate", "could not be deserialized", "Unknown"))
        raise ExportError(
            f"Could not load {path} as a Keras model: {detail}" + (f" {IMPORT_HINT}" if unknown_class else "")
        ) from exc


EPISTEMIC_ONLY = {
    "precision": None,
    "variance": None,
    "method": "epistemic only: no observation-noise estimate (train with mcdrop train, or export with "
    "--noise-precision TAU); intervals cover the model's uncertainty, not the noise of y",
}


def _observation_noise(
    options: ExportOptions, training: dict[str, Any] | None, output_shape: tuple[int, ...], recorded: Any, given: bool
) -> dict[str, Any]:
    """tau per output unit of one regression output: ``--noise-precision`` (``given``), else the training
    record's (``recorded``), else none."""
    from mcdrop.pipeline.training.observation_noise import noise_record

    outputs = math.prod(output_shape)
    if given:
        if len(options.noise_precision) not in (1, outputs):
            raise InvalidArgument(
                f"--noise-precision takes one value or one per output ({outputs}). "
                f"Received: {len(options.noise_precision)} values"
            )
        values = list(options.noise_precision) * (outputs if len(options.noise_precision) == 1 else 1)
        return noise_record(values, method="given at export (--noise-precision)")
    if isinstance(recorded, dict) and len(recorded.get("precision") or []) == outputs:
        return noise_record(recorded["precision"], method=str(recorded.get("method", "training record")))
    return EPISTEMIC_ONLY


def _training_record(model_path: Path) -> dict[str, Any] | None:
    """``training.json`` next to the model, if mcdrop trained it."""
    record = model_path.parent / "training.json"
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


TASKS = ("classification", "regression")


def _tasks(options: ExportOptions, model: Any, training: dict[str, Any] | None, names: list[str]) -> list[str]:
    """The task of each output: ``--task`` (``KIND``, or ``NAME=KIND`` per output), else the training record's,
    else the output layer's activation (softmax: classification)."""
    given: dict[str, str] = {}
    if options.task:
        parts = [part.strip() for part in options.task.split(",") if part.strip()]
        if len(parts) == 1 and "=" not in parts[0]:
            given = dict.fromkeys(names, parts[0])
        else:
            for part in parts:
                name, _, kind = part.partition("=")
                if not kind or name not in names:
                    raise InvalidArgument(
                        f"Invalid --task {part!r}. Expected KIND, or NAME=KIND with NAME one of the model's outputs "
                        f"{names}."
                    )
                given[name] = kind
        for kind in given.values():
            if kind not in TASKS:
                raise InvalidArgument(f"Invalid task {kind!r}. Expected classification or regression.")
    recorded = _recorded_outputs(training, names)
    tasks = []
    for index, name in enumerate(names):
        if name in given:
            tasks.append(given[name])
        elif recorded.get(name, {}).get("task") in TASKS:
            tasks.append(str(recorded[name]["task"]))
        else:
            layer = getattr(model.outputs[index], "_keras_history", None)
            activation = getattr(getattr(layer, "operation", None), "activation", None)
            if len(names) == 1:
                activation = getattr(model.layers[-1], "activation", None)
            tasks.append("classification" if getattr(activation, "__name__", "") == "softmax" else "regression")
    return tasks


def _recorded_outputs(training: dict[str, Any] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """What the training record says of each output: ``outputs`` (several heads), or the single output's
    ``task``, class labels, target names and observation noise."""
    record = training or {}
    if isinstance(record.get("outputs"), list):
        return {str(o.get("name")): o for o in record["outputs"] if isinstance(o, dict)}
    if len(names) != 1:
        return {}
    dataset = record.get("dataset", {}) or {}
    return {names[0]: {"task": record.get("task"), "class_labels": dataset.get("class_labels"),
                       "target_names": dataset.get("target_names"),
                       "observation_noise": record.get("observation_noise")}}  # fmt: skip


def _quantized_variant(
    model: Any,
    functions: dict[str, Any],
    quantization: str,
    float_graphs: dict[str, Graph],
    sites: list[Any],
    x: dict[str, np.ndarray],
    tasks: list[str],
    staging: Path,
    seed: int,
    chunk: int,
) -> dict[str, Any]:
    """Convert the graphs with ``quantization`` and record how far they move from float32."""
    from mcdrop.pipeline.export import convert, stochastic, verify

    names = stochastic.output_names(model)
    record: dict[str, Any] = {"graphs": {}}
    graphs = {}
    blobs = {}
    for graph, function in functions.items():
        if graph not in SERVER_GRAPHS:  # quantised variants are for the server; devices get float32 graphs
            continue
        blob = blobs[graph] = convert.to_tflite(function, model, quantization, output_names=names)
        name = graph_file(graph, quantization)
        (staging / name).write_bytes(blob)
        graphs[graph] = Graph(blob)
        record["graphs"][graph] = {"file": name, "ops": graphs[graph].ops()}
    checks = [verify.op_check(name, g.ops(), sites) for name, g in graphs.items()]
    if sites:
        checks.append(verify.fresh_randomness(verify.mask_probe(blobs["mc"], sites)[0], verify.rows_of(x, slice(0, 2))))
    if problems := verify.failures(checks):
        raise ExportError(f"{quantization} variant failed verification:\n  " + "\n  ".join(problems))
    reference = verify.run_graph(float_graphs["deterministic"], x, names)
    quantised = verify.run_graph(graphs["deterministic"], x, names)
    record["deterministic"] = _agreements(reference, quantised, tasks, names, lead=1)
    if sites:
        feeds = verify.draw_feeds(sites, 16, verify.batch_of(x), np.random.default_rng(seed))
        reference = [
            _run_masked_output(float_graphs["mc_masked"], x, feeds, chunk, names, i) for i in range(len(names))
        ]
        quantised = [_run_masked_output(graphs["mc_masked"], x, feeds, chunk, names, i) for i in range(len(names))]
        record["mc_masked_same_masks"] = _agreements(reference, quantised, tasks, names, lead=1)
    return record


def _run_masked_output(
    graph: Graph, x: dict[str, np.ndarray], feeds: dict[str, np.ndarray], chunk: int, names: list[str], index: int
) -> np.ndarray:
    """The MC mean of output ``index`` of mc_masked.tflite over ``feeds``."""
    from mcdrop.pipeline.export import verify

    samples = next(iter(feeds.values())).shape[0]
    parts = [
        verify.run_graph(graph, {**x, **{n: f[start : start + chunk] for n, f in feeds.items()}}, names)[index]
        for start in range(0, samples, chunk)
    ]
    return np.asarray(np.concatenate(parts).mean(axis=0))


def _agreements(
    reference: list[np.ndarray], other: list[np.ndarray], tasks: list[str], names: list[str], lead: int
) -> dict[str, Any]:
    """How far ``other`` is from ``reference``: one record for a single output, else one per output name."""
    records = {name: _agreement(a, b, task) for name, a, b, task in zip(names, reference, other, tasks, strict=True)}
    return next(iter(records.values())) if len(names) == 1 else records


def _fingerprint(graphs: dict[str, Graph], sites: list[Any], x: dict[str, np.ndarray], names: list[str]) -> Fingerprint:
    """Outputs on fixed inputs (and fixed host masks): a server recomputes them before serving a version,
    which catches damaged weights even where a file's digest was recomputed after the damage. A model with
    several inputs or outputs records each by name."""
    from mcdrop.pipeline.export import verify
    from mcdrop.serving.models.masks import SCHEME, fingerprint_feeds

    def recorded(outputs: list[np.ndarray]) -> Any:
        if len(names) == 1:
            return outputs[0].tolist()
        return {name: output.tolist() for name, output in zip(names, outputs, strict=True)}

    masked = None
    if sites:
        specs = [layer.to_manifest() for layer in sites]  # as a server reads them
        feeds = fingerprint_feeds(specs, FINGERPRINT_SEED, verify.batch_of(x), FINGERPRINT_SAMPLES)
        masked = recorded(verify.run_graph(graphs["mc_masked"], {**x, **feeds}, names))
    return Fingerprint(
        seed=FINGERPRINT_SEED,
        masks=SCHEME,
        rows=verify.batch_of(x),
        samples=FINGERPRINT_SAMPLES,
        x=x["x"].tolist() if list(x) == ["x"] else {name: value.tolist() for name, value in x.items()},
        deterministic=recorded(verify.run_graph(graphs["deterministic"], x, names)),
        mc_masked=masked,
    )


def _agreement(reference: np.ndarray, other: np.ndarray, task: str) -> dict[str, float]:
    diff = np.abs(other.astype(np.float64) - reference)
    result = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    if task == "classification":
        result["top1_agreement"] = float(np.mean(reference.argmax(-1) == other.argmax(-1)))
    return result


def _timing(
    graphs: dict[str, Graph], sites: list[Any], row_shapes: dict[str, tuple[int, ...]], samples: int, chunk: int
) -> dict[str, Any]:
    """Median ms of one MC estimate (T samples, batch 1; invokes of ``chunk`` samples) vs T deterministic invokes."""
    x = {name: np.zeros((1, *row_shape), np.float32) for name, row_shape in row_shapes.items()}

    def median_ms(fn: Callable[[], object], repeats: int = 15) -> float:
        return round(percentile(call_times_ms(fn, repeats), 50), 4)

    def repeats_within(ms: float, at_most: int) -> int:
        """Repeats that fit about ``TIMING_BUDGET_MS`` (a real-size model's T passes take seconds each)."""
        return max(1, min(at_most, int(TIMING_BUDGET_MS / max(ms, 1e-3))))

    deterministic = graphs["deterministic"]
    result: dict[str, Any] = {"samples": samples, "batch": 1, "threads": 1}
    one = result["deterministic_x1_ms"] = median_ms(lambda: deterministic.run(x))
    result[f"deterministic_x{samples}_separate_ms"] = median_ms(
        lambda: [deterministic.run(x) for _ in range(samples)], repeats=repeats_within(one * samples, 5)
    )
    if sites:
        sizes = [np.array(min(chunk, samples - start), np.int32) for start in range(0, samples, chunk)]
        result[f"mc_one_invoke_T{samples}_ms" if len(sizes) == 1 else f"mc_T{samples}_in_{len(sizes)}_invokes_ms"] = (
            median_ms(lambda: [graphs["mc"].run({**x, "samples": t}) for t in sizes], repeats_within(one * 20, 15))
        )
    return result


def _manifest(
    options: ExportOptions,
    model: Any,
    training: dict[str, Any] | None,
    outputs: tuple[OutputSpec, ...],
    sites: list[Any],
    graphs: dict[str, Graph],
    checks: list[dict[str, Any]],
    quantized: dict[str, Any],
    timing: dict[str, Any],
    staging: Path,
) -> Manifest:
    from mcdrop.pipeline.export import stochastic

    names = stochastic.output_names(model)
    graph_specs = {
        GraphName(name): GraphSpec(
            file=graph_file(name),
            inputs=tuple(_tensor_spec(graph, n) for n in graph.input_names),
            outputs=tuple(
                TensorSpec(output, tuple(_output_shape(name, [int(d) for d in tensor.shape[1:]])), "float32")
                for output, tensor in zip(names, model.outputs, strict=True)
            ),
            ops=tuple(graph.ops()),
        )
        for name, graph in graphs.items()
        if name in SERVER_GRAPHS
    }
    return Manifest(
        name=options.name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        inputs=_input_specs(model, training),
        outputs=outputs,
        preprocessing=(training or {}).get("preprocessing", UNKNOWN_PREPROCESSING),
        dropout_layers=tuple(site.to_manifest() for site in sites),
        stochastic=bool(sites),
        default_samples=options.samples,
        cost=_cost(model, sites),
        graphs=graph_specs,
        quantized=quantized,
        verification={"passed": True, "checks": [_without_ops(c) for c in checks]},
        timing_ms=timing,
        files={f.name: sha256_file(f) for f in sorted(staging.iterdir()) if f.is_file()},
        file_bytes={f.name: f.stat().st_size for f in sorted(staging.iterdir()) if f.is_file()},
        source={"model": str(options.model_path), "sha256": sha256_file(options.model_path), **options.extra_source},
        versions={
            "mcdrop": _version("mcdrop"),
            "keras": _version("keras"),
            "ai_edge_litert": _version("ai-edge-litert"),
        },
    )


def _input_specs(model: Any, training: dict[str, Any] | None) -> tuple[InputSpec, ...]:
    """Every input as the graphs take it (float32, cast inside to the model's dtype), with its training columns."""
    from mcdrop.pipeline.export import stochastic
    from mcdrop.pipeline.export.inputs import token_count

    specs = stochastic.model_inputs(model)
    record = training or {}
    recorded = {str(i.get("name")): i for i in record.get("inputs", []) if isinstance(i, dict)}
    found = []
    for index, spec in enumerate(specs):
        if len(specs) == 1:
            columns, tokens = (record.get("dataset", {}) or {}).get("feature_names"), token_count(model)
            # (a model whose only input is one categorical column records it under ``inputs``)
            own = next(iter(recorded.values())) if len(recorded) == 1 else {}
            columns = columns or own.get("feature_names")
        else:
            own = recorded.get(spec.name, {})
            columns, tokens = own.get("feature_names"), token_count(model, index)
        categories = own.get("vocabulary") if own.get("categorical") else None
        found.append(InputSpec(
            name=spec.name,
            shape=(-1, *spec.row_shape),
            dtype="float32",  # every graph takes float32 inputs and casts them to the model's own input dtype
            model_dtype=spec.dtype.name,
            feature_names=None if columns is None else tuple(columns),
            integer_range=None if tokens is None else (0, tokens - 1),
            categories=None if categories is None else tuple(str(c) for c in categories),
        ))  # fmt: skip
    return tuple(found)


def _output_specs(
    options: ExportOptions, model: Any, training: dict[str, Any] | None, tasks: list[str], names: list[str]
) -> tuple[OutputSpec, ...]:
    recorded = _recorded_outputs(training, names)
    classifiers = [name for name, task in zip(names, tasks, strict=True) if task == "classification"]
    regressors = [name for name, task in zip(names, tasks, strict=True) if task == "regression"]
    if options.noise_precision and len(regressors) != 1:
        raise InvalidArgument(
            "--noise-precision applies to regression models. This model is a classifier." if not regressors else
            f"--noise-precision applies to a model's one regression output. This model has several: {regressors}."
        )  # fmt: skip
    if options.labels is not None and len(classifiers) != 1:
        raise InvalidArgument(f"--labels applies to a model's one classification output. This model has "
                              f"{len(classifiers)}: {classifiers}.")  # fmt: skip
    found = []
    for name, task, tensor in zip(names, tasks, model.outputs, strict=True):
        shape = tuple(int(d) for d in tensor.shape[1:])
        record = recorded.get(name, {})
        labels = (
            options.labels if options.labels is not None and task == "classification" else record.get("class_labels")
        )
        if task == "classification" and labels is not None and len(labels) != shape[-1]:
            where = "" if len(names) == 1 else f" for output {name!r}"
            raise InvalidArgument(
                f"{len(labels)} class labels given{where}. Expected {shape[-1]}, one per output unit."
            )
        noise = None
        if task == "regression":
            noise = _observation_noise(options, training, shape, record.get("observation_noise"),
                                       given=bool(options.noise_precision))  # fmt: skip
        targets = record.get("target_names")
        found.append(OutputSpec(
            name=name,
            shape=(-1, *shape),
            dtype="float32",
            target_names=None if targets is None else tuple(targets),
            observation_noise=None if noise is None else ObservationNoise.from_json(noise, f"{name}.observation_noise"),
            task=Task(task),
            class_labels=tuple(labels) if task == "classification" and labels is not None else None,
        ))  # fmt: skip
    return tuple(found)


def _cost(model: Any, sites: list[Any]) -> Cost:
    from mcdrop.pipeline.export.cost import flops_per_row

    flops = flops_per_row(model, {site.owner for site in sites})
    return Cost(prefix=flops["prefix"], per_sample=flops["per_sample"])


def _tensor_spec(graph: Graph, name: str) -> TensorSpec:
    shape, dtype = graph.input_spec(name)
    return TensorSpec(name, tuple(shape), dtype.name)


def _output_shape(graph: str, output_shape: list[int]) -> list[int | str]:
    if graph == "deterministic":
        return ["B", *output_shape]
    return ["T", "B", *output_shape]


def _without_ops(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if k != "ops"}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
