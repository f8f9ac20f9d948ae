"""The prediction core shared by every transport (the mcdrop API and the Open Inference Protocol).

The data plane owns the whole API: predictions, the model list, model metadata and
readiness. Transports only convert messages: they decode into a ``PredictionRequest``
(numpy input, plain Python values), call ``DataPlane``, and encode the ``Prediction``
(or ``ModelStatus``, ``ModelVersion``) back. All validation, admission control, sampling
and uncertainty math happen here, once. Errors are ``mcdrop.serving.errors`` types; the
transports map them to status codes in one place (``mcdrop.serving.grpc.status``).

Sampling paths:

* DETERMINISTIC: one invoke of ``deterministic.tflite``.
* MONTE_CARLO: ``mc_masked.tflite``, all T samples in one invoke, with masks
  drawn on the host by ``MaskStream`` from the request's seed — or, without one,
  from a fresh seed out of the OS's entropy, reported in the answer so that it
  can be replayed. The same seed gives bit-identical answers on every call and
  after restarts. Host masks take 16 random bits per flag, about a quarter of
  what LiteRT's float32 ``RANDOM_UNIFORM`` costs inside ``mc.tflite``.
* With ``mask_source = "graph"``, unseeded requests use ``mc.tflite`` instead
  (masks from LiteRT's OS-seeded random ops; no seed to report).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator, MutableSequence
from typing import Any

import numpy as np

from mcdrop.serving.core import invokes, uncertainty
from mcdrop.serving.errors import DeadlineExceeded, InferenceFailed, InvalidArgument, NotFound, ResourceExhausted
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import request_flops
from mcdrop.serving.models.masks import MaskStream, fresh_seed
from mcdrop.serving.models.repository import ModelRepository, ModelVersion
from mcdrop.serving.runtime.metrics import Metrics
from mcdrop.serving.server.settings import ServerSettings

DETERMINISTIC = "deterministic"
MONTE_CARLO = "monte_carlo"
MODES = (DETERMINISTIC, MONTE_CARLO)
DEFAULT_INTERVAL = 0.95
MAX_SEED = 2**64 - 1
LONE_REQUEST_FLOPS = 50e6
"""Invokes smaller than this (about 0.5 ms on one core) run on one thread even when alone: waking a second thread
costs more than it saves, and on a small machine the client shares the cores."""


@dataclasses.dataclass
class PredictionRequest:
    model: str
    x: np.ndarray
    version: int | None = None
    mode: str | None = None
    """``deterministic``, ``monte_carlo`` (any case) or None (Monte Carlo if the model has dropout)."""
    samples: int | None = None
    """T; None means the model's default."""
    seed: int | None = None
    return_samples: bool = False
    interval: float | None = None
    tolerance: float | None = None
    max_samples: int = 0
    chunk: int = 0
    first_row: int = 0
    """Position of ``x[0]`` in a larger input: with a seed, a row's masks depend only on the seed and its
    position, so batch scoring over any partitioning matches one request over all rows."""


@dataclasses.dataclass
class Prediction:
    model: str
    version: int
    mode: str
    samples: int
    seed: int | None
    task: str
    class_labels: list[str]
    summary: uncertainty.ClassificationSummary | uncertainty.RegressionSummary
    sample_outputs: np.ndarray | None
    final: bool
    max_standard_error: float
    queue_ms: float
    compute_ms: float
    noise_variance: np.ndarray | None = None
    """Regression: the observation-noise variance behind ``predictive_std``; None = epistemic only."""


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """A model's loaded versions, the newest of them, and the versions that failed to load (with reasons)."""

    name: str
    versions: list[int]
    latest: ModelVersion | None
    failed: dict[int, str]


@dataclasses.dataclass
class _Plan:
    """A validated request, resolved against its model version."""

    version: ModelVersion
    x: np.ndarray
    mode: str
    samples: int
    seed: int | None
    interval: float
    tolerance: float | None
    chunk: int
    return_samples: bool
    first_row: int = 0
    flops: float = 0.0
    """Compute of the whole request (0 when the manifest has no cost)."""


class DataPlane:
    """Validates, admits and runs predictions. Thread-safe."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: ServerSettings,
        metrics: Metrics,
        is_ready: Callable[[], bool] = lambda: True,
        server_load: MutableSequence[int] | None = None,
        worker: int = 0,
    ) -> None:
        """Args:
        repository: the loaded model versions.
        settings: limits and defaults.
        metrics: where to count and time.
        is_ready: whether the server is up and not draining (for readiness answers).
        server_load: requests in flight per worker process of this server (shared memory); this data plane
            writes slot ``worker``. None: this process is the whole server.
        """
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self._is_ready = is_ready
        self._capacity = settings.pool_size + settings.max_queue
        self._inflight = 0
        self._lock = threading.Lock()
        self._server_load = server_load
        self._worker = worker

    # Models -------------------------------------------------------------------------------------

    def model(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested (or latest) loaded version.

        Raises:
            NotFound: no such model, or that version is not loaded.
        """
        return self.repository.get(name, version)

    def loaded_versions(self, name: str) -> list[int]:
        """The loaded versions of a model, oldest first (empty if none)."""
        state = self.repository.states().get(name)
        return sorted(state.versions) if state else []

    def list_models(self) -> list[ModelStatus]:
        """Every model with a loaded or failed version, by name."""
        return [
            ModelStatus(name, sorted(state.versions), state.latest, dict(state.failed))
            for name, state in sorted(self.repository.states().items())
        ]

    def server_ready(self) -> bool:
        """The server is up and not draining."""
        return self._is_ready()

    def model_ready(self, name: str, version: int | None = None) -> bool:
        """The model (version) is loaded and the server is ready."""
        try:
            self.repository.get(name, version)
        except NotFound:
            return False
        return self._is_ready()

    # Predictions --------------------------------------------------------------------------------

    def predict(self, request: PredictionRequest, deadline: float | None = None) -> Prediction:
        """One prediction; adaptive when ``request.tolerance`` is set.

        Raises:
            NotFound, InvalidArgument: the request cannot be served as asked.
            ResourceExhausted: the server is at capacity.
            DeadlineExceeded: the deadline passed.
        """
        plan = self._plan(request)
        with self._admitted():
            if plan.mode == DETERMINISTIC or plan.tolerance is None:
                return self._one_shot(plan, deadline)
            # Adaptive: run the chunks to the end and answer with the last (final) estimate.
            return collections.deque(self._chunks(plan, deadline), maxlen=1)[0]

    def predict_stream(self, request: PredictionRequest, deadline: float | None = None) -> Iterator[Prediction]:
        """Progressive estimates every ``chunk`` samples; the last has ``final=True``."""
        plan = self._plan(request)
        with self._admitted():
            if plan.mode == DETERMINISTIC:
                yield self._one_shot(plan, deadline)
                return
            yield from self._chunks(plan, deadline)

    # Validation ---------------------------------------------------------------------------------

    def _plan(self, request: PredictionRequest) -> _Plan:
        version = self.repository.get(request.model, request.version)
        x = self._check_input(version, request.x)
        mode = request.mode.lower() if request.mode else (MONTE_CARLO if version.stochastic else DETERMINISTIC)
        if mode not in MODES:
            raise InvalidArgument(f"Invalid mode {request.mode!r}. Expected 'deterministic' or 'monte_carlo'.")
        if mode == MONTE_CARLO and not version.stochastic:
            raise InvalidArgument(
                f"Model {version.name!r} version {version.version} has no dropout layers, so MONTE_CARLO has nothing "
                "to sample. Expected mode DETERMINISTIC."
            )
        limit = self.settings.max_samples
        samples = version.default_samples if request.samples is None else request.samples
        # T <= 0 is refused in every mode; the upper limit matters only where T passes run.
        if samples < 1 or (mode == MONTE_CARLO and samples > limit):
            raise InvalidArgument(f"Invalid samples. Expected 1 <= T <= {limit}. Received: {samples}")
        if mode == DETERMINISTIC:
            samples = 1
        tolerance = request.tolerance
        if tolerance is not None:
            if not (math.isfinite(tolerance) and tolerance > 0):
                raise InvalidArgument(f"Invalid tolerance. Expected a positive finite number. Received: {tolerance}")
            samples = request.max_samples or limit
            if not 1 <= samples <= limit:
                raise InvalidArgument(f"Invalid max_samples. Expected 1 <= max_samples <= {limit}. Received: {samples}")
        rows = samples * len(x)
        if rows > self.settings.max_sample_rows:
            raise InvalidArgument(
                f"Request too large: T x batch = {samples} x {len(x)} = {rows}. "
                f"Expected at most {self.settings.max_sample_rows}."
            )
        cost = version.manifest.get("cost")
        flops = request_flops(cost, len(x), samples) if cost else 0.0
        if cost:
            gflops = flops / 1e9
            if gflops > self.settings.max_request_gflops:
                raise InvalidArgument(
                    f"Request too costly: {gflops:.3g} GFLOP for batch {len(x)} x T={samples} on model "
                    f"{version.name!r}. Expected at most {self.settings.max_request_gflops:g} GFLOP."
                )
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
            raise InvalidArgument(f"Invalid seed. Expected an integer in [0, 2^64). Received: {request.seed}")
        interval = DEFAULT_INTERVAL if request.interval is None else request.interval
        if not (math.isfinite(interval) and 0 < interval < 1):
            raise InvalidArgument(f"Invalid interval. Expected a level in (0, 1). Received: {interval}")
        chunk = request.chunk or self.settings.default_chunk
        if not 1 <= chunk <= limit:
            raise InvalidArgument(f"Invalid chunk. Expected 1 <= chunk <= {limit}. Received: {chunk}")
        if request.first_row < 0:
            raise InvalidArgument(f"Invalid first_row. Expected an integer >= 0. Received: {request.first_row}")
        return _Plan(version, x, mode, samples, request.seed, interval, tolerance, chunk, request.return_samples,
                     request.first_row, flops)  # fmt: skip

    def _check_input(self, version: ModelVersion, x: np.ndarray) -> np.ndarray:
        """Shape and batch checked, converted to the model's input dtype, finite."""
        expected = version.input_shape
        shown = "[B, " + ", ".join(str(d) for d in expected[1:]) + "]"
        if x.ndim != len(expected) or tuple(x.shape[1:]) != expected[1:]:
            raise InvalidArgument(
                f"Invalid input shape for model {version.name!r}. Expected {shown}. Received: {list(x.shape)}"
            )
        if not 1 <= len(x) <= self.settings.max_batch:
            raise InvalidArgument(
                f"Invalid batch size. Expected 1 <= B <= {self.settings.max_batch}. Received: {len(x)}"
            )
        x = _converted(x, np.dtype(version.input_dtype), version.name)
        finite = np.isfinite(x)
        if not finite.all():
            first = [int(i) for i in np.argwhere(~finite)[0]]
            raise InvalidArgument(
                f"Input contains {int((~finite).sum())} NaN/Inf value(s), first at index {first}. "
                "Expected finite numbers."
            )
        if version.integer_range is not None:
            _check_token_ids(x, version.integer_range, version.name)
        return np.ascontiguousarray(x)

    # Admission ----------------------------------------------------------------------------------

    class _Admission:
        def __init__(self, plane: DataPlane) -> None:
            self._plane = plane

        def __enter__(self) -> None:
            plane = self._plane
            with plane._lock:
                if plane._inflight >= plane._capacity:
                    raise ResourceExhausted(
                        f"Server at capacity: {plane._inflight} requests in flight (limit {plane._capacity}). "
                        "Retry later."
                    )
                plane._inflight += 1
                if plane._server_load is not None:
                    plane._server_load[plane._worker] = plane._inflight
            plane.metrics.inflight.inc()

        def __exit__(self, *exc: object) -> None:
            plane = self._plane
            with plane._lock:
                plane._inflight -= 1
                if plane._server_load is not None:
                    plane._server_load[plane._worker] = plane._inflight
            plane.metrics.inflight.dec()

    def _alone(self) -> bool:
        """Whether the calling request is the only one in flight on the whole server (so cores are idle)."""
        load = self._server_load
        return (sum(load) if load is not None else self._inflight) == 1

    def _admitted(self) -> DataPlane._Admission:
        return DataPlane._Admission(self)

    # Sampling -----------------------------------------------------------------------------------

    def _masks(self, plan: _Plan) -> MaskStream | None:
        """The request's mask stream; None for one pass, or for in-graph masks."""
        if plan.mode == DETERMINISTIC or (plan.seed is None and self.settings.mask_source == "graph"):
            return None
        if plan.seed is None:
            plan.seed = fresh_seed()
        return MaskStream(plan.version.dropout, plan.seed, len(plan.x), plan.first_row)

    def _one_shot(self, plan: _Plan, deadline: float | None) -> Prediction:
        masks = self._masks(plan)
        samples, queue_s, compute_s = self._run(plan, plan.samples, masks, deadline)
        started = time.perf_counter()
        prediction = self._summarise(plan, samples, final=True, queue_s=queue_s, compute_s=compute_s)
        prediction.compute_ms += (time.perf_counter() - started) * 1e3
        self._observe(plan, prediction)
        return prediction

    def _chunks(self, plan: _Plan, deadline: float | None) -> Iterator[Prediction]:
        masks = self._masks(plan)
        collected: list[np.ndarray] = []
        drawn, queue_s, compute_s = 0, 0.0, 0.0
        while drawn < plan.samples:
            size = min(plan.chunk, plan.samples - drawn)
            chunk, waited, computed = self._run(plan, size, masks, deadline)
            collected.append(chunk)
            drawn += size
            queue_s += waited
            started = time.perf_counter()
            samples = np.concatenate(collected) if len(collected) > 1 else chunk
            collected = [samples]
            prediction = self._summarise(plan, samples, final=False, queue_s=queue_s, compute_s=compute_s)
            converged = plan.tolerance is not None and prediction.max_standard_error <= plan.tolerance
            final = drawn >= plan.samples or converged
            compute_s += computed + time.perf_counter() - started
            prediction.final, prediction.compute_ms = final, compute_s * 1e3
            if final:
                self._observe(plan, prediction)
            yield prediction
            if final:
                return

    def _run(
        self, plan: _Plan, samples: int, masks: MaskStream | None, deadline: float | None
    ) -> tuple[np.ndarray, float, float]:
        """Invoke the right graph; return ``[T, B, ...]`` outputs, queue seconds and compute seconds.

        The T x B sample rows run in invokes that fit ``max_invoke_mb`` (``mcdrop.serving.core.invokes``), all on one
        leased interpreter; masks are drawn per chunk of samples for all rows, so the answer does not depend on
        the split.
        """
        version = plan.version
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("The deadline passed before sampling finished.")
        graph_name = DETERMINISTIC if plan.mode == DETERMINISTIC else ("mc_masked" if masks is not None else "mc")
        split = self._split(version, graph_name, len(plan.x), 1 if plan.mode == DETERMINISTIC else samples)
        waiting = time.perf_counter()
        alone = plan.flops * samples / plan.samples >= LONE_REQUEST_FLOPS and self._alone()
        with version.pools[graph_name].lease(deadline, alone=alone) as graph:
            started = time.perf_counter()
            if plan.mode == DETERMINISTIC:
                output = np.concatenate(
                    [self._invoke(graph, version, graph_name, {"x": x}, 1) for x in _blocks(plan.x, split.rows)]
                )[np.newaxis]
            else:
                output = self._sample(graph, version, graph_name, plan.x, samples, masks, split, deadline)
            finished = time.perf_counter()
        return output, started - waiting, finished - started

    def _split(self, version: ModelVersion, graph_name: str, batch: int, samples: int) -> invokes.InvokePlan:
        footprint = version.footprint("deterministic" if graph_name == DETERMINISTIC else "mc_masked")
        what = f"Model {version.name!r} version {version.version} ({graph_name}.tflite)"
        return invokes.plan(footprint, batch, samples, int(self.settings.max_invoke_mb * invokes.MIB), what)

    def _sample(
        self,
        graph: Graph,
        version: ModelVersion,
        graph_name: str,
        x: np.ndarray,
        samples: int,
        masks: MaskStream | None,
        split: invokes.InvokePlan,
        deadline: float | None,
    ) -> np.ndarray:
        if split.rows >= len(x) and split.samples >= samples:  # one invoke: no slicing, no copy
            feeds = (
                {"x": x, **masks.next(samples)}
                if masks is not None
                else {"x": x, "samples": np.array(samples, np.int32)}
            )
            return self._invoke(graph, version, graph_name, feeds, samples)
        output: np.ndarray | None = None
        for first in range(0, samples, split.samples):
            count = min(split.samples, samples - first)
            drawn = masks.next(count) if masks is not None else None
            for start in range(0, len(x), split.rows):
                rows = slice(start, start + split.rows)
                if drawn is not None:
                    feeds = {"x": x[rows], **{name: mask[:, rows] for name, mask in drawn.items()}}
                else:
                    feeds = {"x": x[rows], "samples": np.array(count, np.int32)}
                block = self._invoke(graph, version, graph_name, feeds, count)
                if output is None:
                    output = np.empty((samples, len(x), *block.shape[2:]), block.dtype)
                output[first : first + count, rows] = block
            if deadline is not None and time.monotonic() > deadline and first + count < samples:
                raise DeadlineExceeded("The deadline passed before sampling finished.")
        assert output is not None  # samples >= 1
        return output

    @staticmethod
    def _invoke(
        graph: Graph, version: ModelVersion, graph_name: str, feeds: dict[str, np.ndarray], samples: int
    ) -> np.ndarray:
        """One invoke; a LiteRT failure becomes an error that names the model, graph, rows and what to change."""
        try:
            return graph.run(feeds)[0]
        except (InferenceFailed, RuntimeError) as exc:
            rows = len(feeds["x"])
            raise InferenceFailed(
                f"LiteRT failed to run {graph_name}.tflite of model {version.name!r} version {version.version} on "
                f"{rows * samples} sample rows (T={samples} x B={rows}): {str(exc).strip() or type(exc).__name__}. "
                "Try a smaller T or batch, or a smaller --max-invoke-mb so that each invoke holds fewer rows."
            ) from exc

    def _summarise(
        self, plan: _Plan, samples: np.ndarray, *, final: bool, queue_s: float, compute_s: float
    ) -> Prediction:
        version = plan.version
        summary: Any
        if version.task == "classification":
            summary = uncertainty.classification(samples)
        else:
            summary = uncertainty.regression(samples, plan.interval, version.noise_variance)
        count = samples.shape[0]
        error = 0.0 if plan.mode == DETERMINISTIC else uncertainty.max_standard_error_from_std(summary.std, count)
        return Prediction(
            model=version.name,
            version=version.version,
            mode=plan.mode,
            samples=int(samples.shape[0]),
            seed=plan.seed,
            task=version.task,
            class_labels=version.class_labels,
            summary=summary,
            sample_outputs=samples if plan.return_samples else None,
            final=final,
            max_standard_error=error,
            queue_ms=queue_s * 1e3,
            compute_ms=compute_s * 1e3,
            noise_variance=None if version.task == "classification" else version.noise_variance,
        )

    def _observe(self, plan: _Plan, prediction: Prediction) -> None:
        queue, compute, samples = self.metrics.per_model(plan.version.name, plan.mode)
        queue.observe(prediction.queue_ms / 1e3)
        compute.observe(prediction.compute_ms / 1e3)
        samples.observe(prediction.samples)


def _blocks(x: np.ndarray, rows: int) -> list[np.ndarray]:
    return [x[start : start + rows] for start in range(0, len(x), rows)]


def _check_token_ids(x: np.ndarray, bounds: tuple[int, int], model: str) -> None:
    low, high = bounds
    bad = (x != np.round(x)) | (x < low) | (x > high)
    if bad.any():
        first = [int(i) for i in np.argwhere(bad)[0]]
        raise InvalidArgument(
            f"Input value {x[tuple(first)].item()!r} at index {first} is not a token id of model {model!r}. "
            f"Expected whole numbers in [{low}, {high}]."
        )


def _converted(x: np.ndarray, dtype: np.dtype[Any], model: str) -> np.ndarray:
    """``x`` as the model's input dtype: numbers of any width convert (float64 → float32 rounds); values
    outside the target's range are refused rather than turned into Inf."""
    if x.dtype == dtype:
        return x
    if x.dtype.kind not in "fiu" or dtype.kind != "f":
        raise InvalidArgument(
            f"Invalid input dtype for model {model!r}. Expected {dtype.name.upper()} or another numeric type. "
            f"Received: {x.dtype.name.upper()}"
        )
    with np.errstate(over="ignore"):
        converted = x.astype(dtype)
    overflow = ~np.isfinite(converted) & np.isfinite(x)
    if overflow.any():
        first = [int(i) for i in np.argwhere(overflow)[0]]
        raise InvalidArgument(
            f"Input value {x[tuple(first)].item()!r} at index {first} is outside the {dtype.name} range of model "
            f"{model!r}. Expected |x| <= {float(np.finfo(dtype).max):.6g}."
        )
    return converted
