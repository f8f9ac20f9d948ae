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
    Fingerprint,
    GraphName,
    GraphSpec,
    InputSpec,
    Manifest,
    ObservationNoise,
    OutputSpec,
    Task,
    TensorSpec,
    graph_file,
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
UNKNOWN_PREPROCESSING = {"applied_in_model": None, "note": "unknown: the model was not trained by mcdrop"}


@dataclasses.dataclass
class ExportOptions:
    model_path: Path
    repository: Path
    name: str
    samples: int = DEFAULT_SAMPLES
    quantize: tuple[str, ...] = ()
    task: str | None = None
    labels: list[str] | None = None
    seed: int = 0
    imports: tuple[str, ...] = ()
    """Modules or .py files to import before loading (the user's registered custom layers)."""
    noise_precision: tuple[float, ...] = ()
    """Observation-noise precision tau per output (regression); overrides the training record's."""
    mc_layers: str = "all"
    """Which dropout sites stay stochastic: ``all``, ``last`` or names (``mcdrop.pipeline.export.selection``)."""
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
    row_shape, _ = stochastic.input_signature(model)
    task = _task(options, model, training)
    x = inputs.check_inputs(model, row_shape, training, VERIFY_ROWS, options.seed)

    staging = publish.create_staging(options.repository, options.name)
    try:
        functions = convert.graph_functions(model, sites, inactive)
        blobs: dict[str, bytes] = {}
        for graph, function in functions.items():
            step(f"converting {graph}")
            blobs[graph] = convert.to_tflite(function, model)
            (staging / graph_file(graph)).write_bytes(blobs[graph])

        step("measuring activation memory")
        footprints = _footprints(blobs, sites, row_shape)
        chunk = _chunk_samples(footprints.get("mc_masked"), len(x))
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

        quantized = {}
        for quantization in options.quantize:
            step(f"quantising ({quantization})")
            quantized[quantization] = _quantized_variant(
                model, functions, quantization, graphs, sites, x, task, staging, options.seed, chunk
            )

        step("fingerprint")
        fingerprint_x = inputs.check_inputs(model, row_shape, None, FINGERPRINT_ROWS, FINGERPRINT_SEED)
        fingerprint = _fingerprint(graphs, sites, fingerprint_x)
        step("timing")
        timing = _timing(graphs, sites, row_shape, options.samples, _chunk_samples(footprints.get("mc_masked"), 1))
        manifest = dataclasses.replace(
            _manifest(options, model, training, task, sites, graphs, checks, quantized, timing, staging),
            fingerprint=fingerprint,
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


def _footprints(blobs: dict[str, bytes], sites: list[Any], row_shape: tuple[int, ...]) -> dict[str, Any]:
    """Activation bytes per row of the deterministic and the fed-mask graph (``mcdrop.serving.models.memory``)."""
    from mcdrop.serving.models.memory import footprint, zero_feeds

    found = {"deterministic": footprint(blobs["deterministic"], zero_feeds(row_shape))}
    if sites:
        masks = [(site.feed_name, site.noise_shape, site.feed_dtype.as_numpy_dtype) for site in sites]
        found["mc_masked"] = footprint(blobs["mc_masked"], zero_feeds(row_shape, masks))
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
    options: ExportOptions, training: dict[str, Any] | None, task: str, output_shape: list[int]
) -> dict[str, Any] | None:
    """tau per output for regression: ``--noise-precision``, else the training record's, else none."""
    from mcdrop.pipeline.training.observation_noise import noise_record

    outputs = math.prod(output_shape)
    if task != "regression":
        if options.noise_precision:
            raise InvalidArgument("--noise-precision applies to regression models. This model is a classifier.")
        return None
    if options.noise_precision:
        if len(options.noise_precision) not in (1, outputs):
            raise InvalidArgument(
                f"--noise-precision takes one value or one per output ({outputs}). "
                f"Received: {len(options.noise_precision)} values"
            )
        values = list(options.noise_precision) * (outputs if len(options.noise_precision) == 1 else 1)
        return noise_record(values, method="given at export (--noise-precision)")
    recorded = (training or {}).get("observation_noise")
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


def _task(options: ExportOptions, model: Any, training: dict[str, Any] | None) -> str:
    if options.task:
        if options.task not in ("classification", "regression"):
            raise InvalidArgument(f"Invalid task {options.task!r}. Expected classification or regression.")
        return options.task
    if training and training.get("task") in ("classification", "regression"):
        return str(training["task"])
    activation = getattr(model.layers[-1], "activation", None)
    return "classification" if getattr(activation, "__name__", "") == "softmax" else "regression"


def _quantized_variant(
    model: Any,
    functions: dict[str, Any],
    quantization: str,
    float_graphs: dict[str, Graph],
    sites: list[Any],
    x: np.ndarray,
    task: str,
    staging: Path,
    seed: int,
    chunk: int,
) -> dict[str, Any]:
    """Convert the graphs with ``quantization`` and record how far they move from float32."""
    from mcdrop.pipeline.export import convert, verify

    record: dict[str, Any] = {"graphs": {}}
    graphs = {}
    blobs = {}
    for graph, function in functions.items():
        blob = blobs[graph] = convert.to_tflite(function, model, quantization)
        name = graph_file(graph, quantization)
        (staging / name).write_bytes(blob)
        graphs[graph] = Graph(blob)
        record["graphs"][graph] = {"file": name, "ops": graphs[graph].ops()}
    checks = [verify.op_check(name, g.ops(), sites) for name, g in graphs.items()]
    if sites:
        checks.append(verify.fresh_randomness(verify.mask_probe(blobs["mc"], sites)[0], x[:2]))
    if problems := verify.failures(checks):
        raise ExportError(f"{quantization} variant failed verification:\n  " + "\n  ".join(problems))
    reference = float_graphs["deterministic"].run({"x": x})[0]
    quantised = graphs["deterministic"].run({"x": x})[0]
    record["deterministic"] = _agreement(reference, quantised, task)
    if sites:
        feeds = verify.draw_feeds(sites, 16, len(x), np.random.default_rng(seed))
        reference = verify.run_masked(float_graphs["mc_masked"], x, feeds, chunk).mean(axis=0)
        quantised = verify.run_masked(graphs["mc_masked"], x, feeds, chunk).mean(axis=0)
        record["mc_masked_same_masks"] = _agreement(reference, quantised, task)
    return record


def _fingerprint(graphs: dict[str, Graph], sites: list[Any], x: np.ndarray) -> Fingerprint:
    """Outputs on fixed inputs (and fixed host masks): a server recomputes them before serving a version,
    which catches damaged weights even where a file's digest was recomputed after the damage."""
    from mcdrop.serving.models.masks import SCHEME, fingerprint_feeds

    masked = None
    if sites:
        specs = [layer.to_manifest() for layer in sites]  # as a server reads them
        feeds = fingerprint_feeds(specs, FINGERPRINT_SEED, len(x), FINGERPRINT_SAMPLES)
        masked = graphs["mc_masked"].run({"x": x, **feeds})[0].tolist()
    return Fingerprint(
        seed=FINGERPRINT_SEED,
        masks=SCHEME,
        rows=len(x),
        samples=FINGERPRINT_SAMPLES,
        x=x.tolist(),
        deterministic=graphs["deterministic"].run({"x": x})[0].tolist(),
        mc_masked=masked,
    )


def _agreement(reference: np.ndarray, other: np.ndarray, task: str) -> dict[str, float]:
    diff = np.abs(other.astype(np.float64) - reference)
    result = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    if task == "classification":
        result["top1_agreement"] = float(np.mean(reference.argmax(-1) == other.argmax(-1)))
    return result


def _timing(
    graphs: dict[str, Graph], sites: list[Any], row_shape: tuple[int, ...], samples: int, chunk: int
) -> dict[str, Any]:
    """Median ms of one MC estimate (T samples, batch 1; invokes of ``chunk`` samples) vs T deterministic invokes."""
    x = np.zeros((1, *row_shape), np.float32)

    def median_ms(fn: Callable[[], object], repeats: int = 15) -> float:
        return round(percentile(call_times_ms(fn, repeats), 50), 4)

    def repeats_within(ms: float, at_most: int) -> int:
        """Repeats that fit about ``TIMING_BUDGET_MS`` (a real-size model's T passes take seconds each)."""
        return max(1, min(at_most, int(TIMING_BUDGET_MS / max(ms, 1e-3))))

    deterministic = graphs["deterministic"]
    result: dict[str, Any] = {"samples": samples, "batch": 1, "threads": 1}
    one = result["deterministic_x1_ms"] = median_ms(lambda: deterministic.run({"x": x}))
    result[f"deterministic_x{samples}_separate_ms"] = median_ms(
        lambda: [deterministic.run({"x": x}) for _ in range(samples)], repeats=repeats_within(one * samples, 5)
    )
    if sites:
        sizes = [np.array(min(chunk, samples - start), np.int32) for start in range(0, samples, chunk)]
        result[f"mc_one_invoke_T{samples}_ms" if len(sizes) == 1 else f"mc_T{samples}_in_{len(sizes)}_invokes_ms"] = (
            median_ms(lambda: [graphs["mc"].run({"x": x, "samples": t}) for t in sizes], repeats_within(one * 20, 15))
        )
    return result


def _manifest(
    options: ExportOptions,
    model: Any,
    training: dict[str, Any] | None,
    task: str,
    sites: list[Any],
    graphs: dict[str, Graph],
    checks: list[dict[str, Any]],
    quantized: dict[str, Any],
    timing: dict[str, Any],
    staging: Path,
) -> Manifest:
    dataset = (training or {}).get("dataset", {})
    labels = options.labels or dataset.get("class_labels")
    output_shape = [int(d) for d in model.outputs[0].shape[1:]]
    if task == "classification" and labels is not None and len(labels) != output_shape[-1]:
        raise InvalidArgument(f"{len(labels)} class labels given. Expected {output_shape[-1]}, one per output unit.")
    graph_specs = {
        GraphName(name): GraphSpec(
            file=graph_file(name),
            inputs=tuple(_tensor_spec(graph, n) for n in graph.input_names),
            output=TensorSpec("y", tuple(_output_shape(name, output_shape)), "float32"),
            ops=tuple(graph.ops()),
        )
        for name, graph in graphs.items()
    }
    names = dataset.get("feature_names")
    targets = dataset.get("target_names")
    noise = _observation_noise(options, training, task, output_shape)
    return Manifest(
        name=options.name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        task=Task(task),
        class_labels=tuple(labels) if task == "classification" and labels is not None else None,
        input=InputSpec(
            name="x",
            shape=(-1, *[int(d) for d in model.inputs[0].shape[1:]]),
            dtype="float32",  # every graph takes float32 x and casts it to the model's own input dtype
            model_dtype=str(model.inputs[0].dtype),
            feature_names=None if names is None else tuple(names),
            integer_range=_token_range(model),
        ),
        output=OutputSpec(
            name="y",
            shape=(-1, *output_shape),
            dtype="float32",
            target_names=None if targets is None else tuple(targets),
            observation_noise=None if noise is None else ObservationNoise.from_json(noise, "output.observation_noise"),
        ),
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


def _cost(model: Any, sites: list[Any]) -> Cost:
    from mcdrop.pipeline.export.cost import flops_per_row

    flops = flops_per_row(model, {site.owner for site in sites})
    return Cost(prefix=flops["prefix"], per_sample=flops["per_sample"])


def _token_range(model: Any) -> tuple[int, int] | None:
    """Token-id models (an ``Embedding`` first): the graphs take float32 ``x`` holding whole numbers in this range."""
    from mcdrop.pipeline.export.inputs import token_count

    tokens = token_count(model)
    return None if tokens is None else (0, tokens - 1)


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
