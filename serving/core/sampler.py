"""The sampler: plan → masks → invoke → summarise, for one request on one loaded model version.

Used by the server's data plane (``mcdrop.serving.runtime.dataplane``, which adds admission, the
server-wide load and metrics) and by batch scoring (``mcdrop.serving.scoring``) alike, so the two
give the same numbers for the same model, version, T and seed.

Sampling paths:

* DETERMINISTIC: one pass of ``deterministic.tflite``.
* MONTE_CARLO: ``mc_masked.tflite``, with masks drawn on the host by ``MaskStream`` from the
  request's seed — or, without one, from a fresh seed out of the OS's entropy, reported in the
  answer so that it can be replayed. The same seed gives bit-identical answers on every call and
  after restarts. Host masks take 16 random bits per flag, about a quarter of what LiteRT's float32
  ``RANDOM_UNIFORM`` costs inside ``mc.tflite``.
* MOMENTS: one pass of ``moments.tflite`` (mean and variance per unit); classification draws S = T logit vectors
  from them with the request's seed (``mcdrop.serving.core.moments``). An approximation of MONTE_CARLO.
* With ``mask_source="graph"``, unseeded requests use ``mc.tflite`` instead (masks from LiteRT's
  OS-seeded random ops; no seed to report).

The T x B sample rows run in invokes that fit ``max_invoke_bytes`` (``mcdrop.serving.core.invokes``),
all on one leased interpreter; masks are drawn per chunk of samples for all rows, so the answer does
not depend on the split. Thread-safe: a plan belongs to one request; interpreters are leased.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Iterator

import numpy as np

from mcdrop.serving.core import decision, invokes, moments, uncertainty
from mcdrop.serving.core.inputs import checked_inputs
from mcdrop.serving.core.requests import (
    DEFAULT_INTERVAL,
    MAX_SEED,
    Limits,
    Mode,
    OutputPrediction,
    Prediction,
    PredictionRequest,
)
from mcdrop.serving.errors import DeadlineExceeded, InferenceFailed, InvalidArgument
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import FLOAT32, GraphName, OutputSpec, Task, moments_fields
from mcdrop.serving.models.masks import MaskStream, fresh_seed
from mcdrop.serving.models.repository import ModelRepository, ModelVersion

__all__ = ["MASK_SOURCES", "Plan", "Sampler"]

MASK_SOURCES = ("host", "graph")
DEFAULT_CHUNK = 10
NO_LIMITS = Limits()


@dataclasses.dataclass
class Plan:
    """A validated request, resolved against its model version."""

    version: ModelVersion
    inputs: dict[str, np.ndarray]
    """Every model input by graph input name (``x`` for a single-input model), checked, one batch size."""
    mode: Mode
    samples: int
    seed: int | None
    interval: float
    tolerance: float | None
    chunk: int
    return_samples: bool
    first_row: int = 0
    flops: float = 0.0
    """Compute of the whole request (0 when the manifest has no cost)."""
    abstain: dict[str, decision.AbstainRule] = dataclasses.field(default_factory=dict)
    """Output name → the rule its answer abstains by (``mcdrop.serving.core.decision``)."""
    multipliers: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Regression output name → conformal q̂ for the interval (outputs without one keep the Gaussian interval)."""
    variant: str = FLOAT32
    """The exported graphs that answer (``ModelVersion.variants``)."""

    @property
    def batch(self) -> int:
        return len(next(iter(self.inputs.values())))


WideInvoke = Callable[[float], bool]
"""Called with an invoke's FLOPs: may it run on the pool's many-thread interpreter? (The runtime's rule.)"""


class Sampler:
    """Plans and runs predictions on the versions of a repository. Cheap to construct; thread-safe."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        mask_source: str = "host",
        max_invoke_bytes: int = 64 * invokes.MIB,
        default_chunk: int = DEFAULT_CHUNK,
        wide_invoke: WideInvoke | None = None,
        default_variant: str = FLOAT32,
    ) -> None:
        """Args:
        repository: where versions are looked up (``get(name, version)``).
        mask_source: masks of unseeded Monte-Carlo requests: ``host`` (from a fresh, reported seed) or
            ``graph`` (``mc.tflite``'s in-graph random ops).
        max_invoke_bytes: activation memory of one LiteRT invoke; requests are split to fit it.
        default_chunk: samples per chunk of a stream or adaptive request that does not say.
        wide_invoke: whether an invoke may use the many-thread interpreter (default: never).
        default_variant: the variant of a request that names none, where its version has it (else float32).
        """
        if mask_source not in MASK_SOURCES:
            raise InvalidArgument(f"Invalid mask_source. Expected one of {MASK_SOURCES}. Received: {mask_source!r}")
        self.repository = repository
        self.mask_source = mask_source
        self.max_invoke_bytes = max_invoke_bytes
        self.default_chunk = default_chunk
        self._wide_invoke = wide_invoke or (lambda flops: False)
        self.default_variant = default_variant
        self._policies: dict[int, tuple[ModelVersion, decision.Policy]] = {}

    # Planning -----------------------------------------------------------------------------------

    def plan(self, request: PredictionRequest, limits: Limits = NO_LIMITS) -> Plan:
        """Validate ``request`` against its version and ``limits``.

        Raises:
            NotFound: no such model or version.
            InvalidArgument: the request cannot be served as asked (the message says what was expected).
        """
        version = self.repository.get(request.model, request.version)
        inputs = checked_inputs(version, request.x, request.inputs, limits.max_batch)
        batch = len(next(iter(inputs.values())))
        mode = _mode(request.mode, version)
        variant = self._variant(request.variant, version)
        if mode == Mode.MOMENTS:
            _check_moments_request(request)
            if variant != FLOAT32:
                raise InvalidArgument(
                    f"Mode MOMENTS is served in float32 only: the moments graph propagates variances that int8 or "
                    f"float16 rounding would swamp. Received variant {variant!r}. Expected variant float32, or mode "
                    "MONTE_CARLO."
                )
        limit = limits.max_samples
        samples = version.default_samples if request.samples is None else request.samples
        # T <= 0 is refused in every mode; the upper limit matters only where T passes run.
        if samples < 1 or (mode != Mode.DETERMINISTIC and limit is not None and samples > limit):
            raise InvalidArgument(f"Invalid samples. Expected {_bounds('T', limit)}. Received: {samples}")
        if mode == Mode.DETERMINISTIC:
            samples = 1
        tolerance = request.tolerance
        if tolerance is not None:
            if not (math.isfinite(tolerance) and tolerance > 0):
                raise InvalidArgument(f"Invalid tolerance. Expected a positive finite number. Received: {tolerance}")
            samples = request.max_samples or limit or 0
            if samples < 1 or (limit is not None and samples > limit):
                raise InvalidArgument(
                    f"Invalid max_samples. Expected {_bounds('max_samples', limit)}. Received: {samples}"
                )
        rows = samples * batch
        if limits.max_sample_rows is not None and rows > limits.max_sample_rows:
            raise InvalidArgument(
                f"Request too large: T x batch = {samples} x {batch} = {rows}. "
                f"Expected at most {limits.max_sample_rows}."
            )
        cost = version.manifest.cost
        flops = cost.flops(batch, samples) if cost is not None else 0.0
        if mode == Mode.MOMENTS:
            moments = version.manifest.moments
            flops = batch * (moments.flops_per_row or 0.0) if moments is not None else 0.0
        if cost is not None and limits.max_request_gflops is not None and flops / 1e9 > limits.max_request_gflops:
            raise InvalidArgument(
                f"Request too costly: {flops / 1e9:.3g} GFLOP for batch {batch} x T={samples} on model "
                f"{version.name!r}. Expected at most {limits.max_request_gflops:g} GFLOP."
            )
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
            raise InvalidArgument(f"Invalid seed. Expected an integer in [0, 2^64). Received: {request.seed}")
        interval = DEFAULT_INTERVAL if request.interval is None else request.interval
        if not (math.isfinite(interval) and 0 < interval < 1):
            raise InvalidArgument(f"Invalid interval. Expected a level in (0, 1). Received: {interval}")
        chunk = request.chunk or self.default_chunk
        if chunk < 1 or (limit is not None and chunk > limit):
            raise InvalidArgument(f"Invalid chunk. Expected {_bounds('chunk', limit)}. Received: {chunk}")
        if request.first_row < 0:
            raise InvalidArgument(f"Invalid first_row. Expected an integer >= 0. Received: {request.first_row}")
        policy = self._policy(version)
        abstain = policy.rules(mode, request.abstain_threshold, request.abstain_score)
        multipliers = policy.multipliers(mode, interval)
        return Plan(version, inputs, mode, samples, request.seed, interval, tolerance, chunk, request.return_samples,
                    request.first_row, flops, abstain, multipliers, variant)  # fmt: skip

    def _variant(self, requested: str | None, version: ModelVersion) -> str:
        """The request's variant, else the server's default where the version has it, else float32."""
        if requested:
            version.pools_for(requested)  # an unknown or unexported variant is refused here, naming those exported
            return requested
        default = self.default_variant
        return default if default != FLOAT32 and default in version.variant_pools else FLOAT32

    def _policy(self, version: ModelVersion) -> decision.Policy:
        """The decisions of ``version``, worked out at its first request (a reloaded version is a new object)."""
        found = self._policies.get(id(version))
        if found is None or found[0] is not version:
            if len(self._policies) > 64:  # versions come and go with reloads: forget the old ones
                self._policies.clear()
            found = (version, decision.Policy(version.manifest))
            self._policies[id(version)] = found
        return found[1]

    # Running ------------------------------------------------------------------------------------

    def run(self, plan: Plan, deadline: float | None = None) -> Prediction:
        """The prediction of ``plan``: one shot, or for an adaptive plan the final estimate.

        Raises:
            DeadlineExceeded: ``deadline`` (a ``time.monotonic()`` value) passed.
            InferenceFailed: LiteRT could not run the graph (the message names model, graph and rows).
        """
        if plan.mode == Mode.MOMENTS:
            return self._moments(plan, deadline)
        if plan.mode == Mode.DETERMINISTIC or plan.tolerance is None:
            return self._one_shot(plan, deadline)
        return collections.deque(self.stream(plan, deadline), maxlen=1)[0]

    def stream(self, plan: Plan, deadline: float | None = None) -> Iterator[Prediction]:
        """Progressive estimates every ``plan.chunk`` samples; the last has ``final=True``."""
        if plan.mode in (Mode.DETERMINISTIC, Mode.MOMENTS):
            yield self.run(plan, deadline)
            return
        masks = self._masks(plan)
        collected: list[list[np.ndarray]] = []
        drawn, queue_s, compute_s = 0, 0.0, 0.0
        while drawn < plan.samples:
            size = min(plan.chunk, plan.samples - drawn)
            chunk, waited, computed = self._run(plan, size, masks, deadline)
            collected.append(chunk)
            drawn += size
            queue_s += waited
            started = time.perf_counter()
            samples = [np.concatenate(parts) for parts in zip(*collected, strict=True)] if len(collected) > 1 else chunk
            collected = [samples]
            prediction = self._summarise(plan, samples, final=False, queue_s=queue_s, compute_s=compute_s)
            converged = plan.tolerance is not None and prediction.max_standard_error <= plan.tolerance
            final = drawn >= plan.samples or converged
            compute_s += computed + time.perf_counter() - started
            prediction.final, prediction.compute_ms = final, compute_s * 1e3
            yield prediction
            if final:
                return

    def _masks(self, plan: Plan) -> MaskStream | None:
        """The request's mask stream; None for one pass, or for in-graph masks."""
        if plan.mode == Mode.DETERMINISTIC or (plan.seed is None and self.mask_source == "graph"):
            return None
        if plan.seed is None:
            plan.seed = fresh_seed()
        return MaskStream(plan.version.dropout, plan.seed, plan.batch, plan.first_row)

    def _one_shot(self, plan: Plan, deadline: float | None) -> Prediction:
        masks = self._masks(plan)
        samples, queue_s, compute_s = self._run(plan, plan.samples, masks, deadline)
        started = time.perf_counter()
        prediction = self._summarise(plan, samples, final=True, queue_s=queue_s, compute_s=compute_s)
        prediction.compute_ms += (time.perf_counter() - started) * 1e3
        return prediction

    def _moments(self, plan: Plan, deadline: float | None) -> Prediction:
        """One pass of ``moments.tflite`` (in row blocks that fit the invoke budget), summarised per output."""
        version = plan.version
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("The deadline passed before the moments graph ran.")
        split = self.split(version, GraphName.MOMENTS, plan.batch, 1)
        waiting = time.perf_counter()
        with version.pools[GraphName.MOMENTS].lease(deadline) as graph:
            started = time.perf_counter()
            names = graph.output_names
            blocks = [graph.run(x) for x in _blocks(plan.inputs, plan.batch, split.rows)]
        found = {name: np.concatenate(parts) for name, parts in zip(names, zip(*blocks, strict=True), strict=True)}
        moments_record = version.manifest.moments
        assert moments_record is not None  # _mode admits MOMENTS only for versions with the graph
        links = moments_record.links or (None,) * len(version.outputs)
        classifies = any(link is not None for link in links)
        if classifies and plan.seed is None:
            plan.seed = fresh_seed()
        outputs, error = [], 0.0
        for spec, noise, link in zip(version.outputs, version.noise_variances, links, strict=True):
            fields = moments_fields(spec.name, len(version.outputs), link)
            mean, variance, covariance = found[fields[0]], found[fields[1]], found.get(fields[2])
            summary: uncertainty.ClassificationSummary | uncertainty.RegressionSummary
            if link is not None:
                assert plan.seed is not None
                summary, _ = moments.classification(mean, variance, plan.samples, plan.seed, plan.first_row,
                                                    covariance)  # fmt: skip
                error = max(error, uncertainty.max_standard_error_from_std(summary.std, plan.samples))
            else:
                summary = moments.regression(mean, variance, plan.interval, noise)
            outputs.append(_output(plan, spec, summary, None, noise))
        summarised = time.perf_counter()
        return Prediction(
            model=version.name,
            version=version.version,
            mode=plan.mode,
            samples=plan.samples if classifies else 0,
            seed=plan.seed if classifies else None,
            outputs=tuple(outputs),
            final=True,
            max_standard_error=error,
            queue_ms=(started - waiting) * 1e3,
            compute_ms=(summarised - started) * 1e3,
            variant=plan.variant,
        )

    def _run(
        self, plan: Plan, samples: int, masks: MaskStream | None, deadline: float | None
    ) -> tuple[list[np.ndarray], float, float]:
        """Invoke the right graph; return ``[T, B, ...]`` per model output, queue seconds and compute seconds."""
        version = plan.version
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("The deadline passed before sampling finished.")
        deterministic = plan.mode == Mode.DETERMINISTIC
        graph_name = (
            GraphName.DETERMINISTIC if deterministic else (GraphName.MC_MASKED if masks is not None else GraphName.MC)
        )
        split = self.split(version, graph_name, plan.batch, 1 if deterministic else samples)
        waiting = time.perf_counter()
        wide = self._wide_invoke(plan.flops * samples / plan.samples)
        with version.pools_for(plan.variant)[graph_name].lease(deadline, alone=wide) as graph:
            started = time.perf_counter()
            if deterministic:
                blocks = [
                    _invoke(graph, version, graph_name, x, 1) for x in _blocks(plan.inputs, plan.batch, split.rows)
                ]
                output = [
                    (np.concatenate(parts) if len(parts) > 1 else parts[0])[np.newaxis]
                    for parts in zip(*blocks, strict=True)
                ]
            else:
                output = _sample(graph, version, graph_name, plan.inputs, samples, masks, split, deadline)
            finished = time.perf_counter()
        return output, started - waiting, finished - started

    def split(self, version: ModelVersion, graph_name: GraphName, batch: int, samples: int) -> invokes.InvokePlan:
        """How ``batch`` rows x ``samples`` samples of ``graph_name`` are split into invokes within the budget."""
        footprint = version.footprint(graph_name)
        what = f"Model {version.name!r} version {version.version} ({graph_name}.tflite)"
        return invokes.plan(footprint, batch, samples, self.max_invoke_bytes, what)

    def _summarise(
        self, plan: Plan, samples: list[np.ndarray], *, final: bool, queue_s: float, compute_s: float
    ) -> Prediction:
        version = plan.version
        count = samples[0].shape[0]
        outputs = []
        error = 0.0
        for spec, noise, drawn in zip(version.outputs, version.noise_variances, samples, strict=True):
            summary: uncertainty.ClassificationSummary | uncertainty.RegressionSummary
            if spec.task == Task.CLASSIFICATION:
                summary = uncertainty.classification(drawn)
            else:
                summary = uncertainty.regression(drawn, plan.interval, noise, plan.multipliers.get(spec.name))
            if plan.mode != Mode.DETERMINISTIC:
                error = max(error, uncertainty.max_standard_error_from_std(summary.std, count))
            outputs.append(_output(plan, spec, summary, drawn if plan.return_samples else None, noise))
        return Prediction(
            model=version.name,
            version=version.version,
            mode=plan.mode,
            samples=int(count),
            seed=plan.seed,
            outputs=tuple(outputs),
            final=final,
            max_standard_error=error,
            queue_ms=queue_s * 1e3,
            compute_ms=compute_s * 1e3,
            variant=plan.variant,
        )


def _output(
    plan: Plan,
    spec: OutputSpec,
    summary: uncertainty.ClassificationSummary | uncertainty.RegressionSummary,
    samples: np.ndarray | None,
    noise: np.ndarray | None,
) -> OutputPrediction:
    """One output's answer, with its abstentions or the kind of its interval when the version is calibrated."""
    rule = plan.abstain.get(spec.name)
    decided = None
    if rule is not None and isinstance(summary, uncertainty.ClassificationSummary):
        decided = decision.decide(rule, summary)
    interval = None
    if spec.task == Task.REGRESSION and plan.version.manifest.calibration is not None:
        interval = decision.CONFORMAL if spec.name in plan.multipliers else decision.GAUSSIAN
    return OutputPrediction(
        name=spec.name,
        task=spec.task,
        class_labels=spec.labels,
        summary=summary,
        sample_outputs=samples,
        noise_variance=None if spec.task == Task.CLASSIFICATION else noise,
        decision=decided,
        interval_calibration=interval,
    )


def _mode(requested: str | None, version: ModelVersion) -> Mode:
    if not requested:
        return Mode.MONTE_CARLO if version.stochastic else Mode.DETERMINISTIC
    try:
        mode = Mode(requested.lower())
    except ValueError:
        raise InvalidArgument(
            f"Invalid mode {requested!r}. Expected 'deterministic', 'monte_carlo' or 'moments'."
        ) from None
    if mode == Mode.MOMENTS and not version.has_moments:
        raise InvalidArgument(
            f"Model {version.name!r} version {version.version} has no moments graph, so mode MOMENTS cannot be "
            f"served: {_no_moments_reason(version)} Expected mode MONTE_CARLO (or DETERMINISTIC); this version "
            f"answers {', '.join(version.modes)}."
        )
    if mode == Mode.MONTE_CARLO and not version.stochastic:
        raise InvalidArgument(
            f"Model {version.name!r} version {version.version} has no dropout layers, so MONTE_CARLO has nothing "
            "to sample. Expected mode DETERMINISTIC."
        )
    return mode


def _no_moments_reason(version: ModelVersion) -> str:
    record = version.manifest.moments
    if not version.stochastic:
        return "it has no dropout layers."
    if record is None:
        return "it was exported before mcdrop made moments graphs (re-export it with mcdrop export)."
    reason = record.reason or "the export did not make one."
    return reason if reason.endswith(".") else reason + "."


def _check_moments_request(request: PredictionRequest) -> None:
    """What mode MOMENTS cannot do: it draws no model samples, so there are none to return or to adapt."""
    if request.return_samples:
        raise InvalidArgument(
            "return_samples cannot be used with mode MOMENTS: the moments graph computes a mean and a variance in "
            "one pass and draws no model samples. Expected return_samples false, or mode MONTE_CARLO."
        )
    if request.tolerance is not None:
        raise InvalidArgument(
            "tolerance (adaptive sampling) cannot be used with mode MOMENTS: one pass gives the whole answer. "
            "Expected no tolerance, or mode MONTE_CARLO."
        )


def _bounds(name: str, limit: int | None) -> str:
    return f"1 <= {name} <= {limit}" if limit is not None else f"{name} >= 1"


def _sample(
    graph: Graph,
    version: ModelVersion,
    graph_name: GraphName,
    x: dict[str, np.ndarray],
    samples: int,
    masks: MaskStream | None,
    split: invokes.InvokePlan,
    deadline: float | None,
) -> list[np.ndarray]:
    batch = len(next(iter(x.values())))
    if split.rows >= batch and split.samples >= samples:  # one invoke: no slicing, no copy
        feeds = {**x, **masks.next(samples)} if masks is not None else {**x, "samples": np.array(samples, np.int32)}
        return _invoke(graph, version, graph_name, feeds, samples)
    output: list[np.ndarray] | None = None
    for first in range(0, samples, split.samples):
        count = min(split.samples, samples - first)
        drawn = masks.next(count) if masks is not None else None
        for start in range(0, batch, split.rows):
            rows = slice(start, start + split.rows)
            inputs = {name: value[rows] for name, value in x.items()}
            if drawn is not None:
                feeds = {**inputs, **{name: mask[:, rows] for name, mask in drawn.items()}}
            else:
                feeds = {**inputs, "samples": np.array(count, np.int32)}
            blocks = _invoke(graph, version, graph_name, feeds, count)
            if output is None:
                output = [np.empty((samples, batch, *block.shape[2:]), block.dtype) for block in blocks]
            for whole, block in zip(output, blocks, strict=True):
                whole[first : first + count, rows] = block
        if deadline is not None and time.monotonic() > deadline and first + count < samples:
            raise DeadlineExceeded("The deadline passed before sampling finished.")
    assert output is not None  # samples >= 1
    return output


def _invoke(
    graph: Graph, version: ModelVersion, graph_name: str, feeds: dict[str, np.ndarray], samples: int
) -> list[np.ndarray]:
    """One invoke, every model output in the manifest's order; a LiteRT failure becomes an error that names the
    model, graph, rows and what to change."""
    try:
        outputs = graph.run(feeds)
    except (InferenceFailed, RuntimeError) as exc:
        rows = len(feeds[version.inputs[0].name])
        raise InferenceFailed(
            f"LiteRT failed to run {graph_name}.tflite of model {version.name!r} version {version.version} on "
            f"{rows * samples} sample rows (T={samples} x B={rows}): {str(exc).strip() or type(exc).__name__}. "
            "Try a smaller T or batch, or a smaller --max-invoke-mb so that each invoke holds fewer rows."
        ) from exc
    if len(version.outputs) == 1:
        return outputs[:1]
    names = graph.output_names  # the export names a multi-output graph's output tensors after the model's outputs
    return [outputs[names.index(spec.name)] for spec in version.outputs]


def _blocks(x: dict[str, np.ndarray], batch: int, rows: int) -> list[dict[str, np.ndarray]]:
    if rows >= batch:
        return [x]
    return [{name: value[start : start + rows] for name, value in x.items()} for start in range(0, batch, rows)]
