"""The server's data plane: the one API every transport calls (mcdrop.v1, OIP gRPC, OIP REST).

The data plane owns the whole API: predictions, the model list, model metadata and
readiness. Transports only convert messages: they decode into a ``PredictionRequest``,
call ``DataPlane``, and encode the ``Prediction`` (or ``ModelStatus``, ``ModelVersion``)
back. Here the server's policy wraps the prediction core (``mcdrop.serving.core.Sampler``,
which batch scoring uses directly): the request limits of the settings, admission control
(``capacity`` requests in flight, then ``ResourceExhausted``), the server-wide load shared
by the worker processes, the lone-request rule, and per-model metrics. Errors are
``mcdrop.serving.errors`` types; each transport maps them to its status codes in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, MutableSequence
from typing import Protocol

import numpy as np

from mcdrop.serving.core import decision
from mcdrop.serving.core.requests import Limits, Prediction, PredictionRequest
from mcdrop.serving.core.sampler import Sampler
from mcdrop.serving.errors import NotFound, ResourceExhausted
from mcdrop.serving.models.manifest import Manifest, Task
from mcdrop.serving.models.repository import ModelRepository, ModelVersion
from mcdrop.serving.runtime import watch
from mcdrop.serving.runtime.labels import VersionLabels
from mcdrop.serving.runtime.metrics import Metrics, observe_many

WATCHED_CLASSIFICATION = ("mutual_information", "predictive_entropy", "variation_ratio")
WATCHED_REGRESSION = ("std", "predictive_std")
"""The scores ``mcdrop_uncertainty`` holds per answered row (regression: the mean over the output's values)."""

__all__ = ["LONE_REQUEST_FLOPS", "Capture", "DataPlane", "ModelStatus"]

LONE_REQUEST_FLOPS = 50e6
"""Invokes smaller than this (about 0.5 ms on one core) run on one thread even when alone: waking a second thread
costs more than it saves, and on a small machine the client shares the cores."""


class Capture(Protocol):
    """What the data plane hands every answer to (``mcdrop.serving.capture.writer.CaptureWriter``): must not block
    or raise."""

    def offer(self, manifest: Manifest, inputs: Mapping[str, np.ndarray], prediction: Prediction,
              request_id: str = "") -> None: ...  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """A model's loaded versions, the newest of them, and the versions that failed to load (with reasons)."""

    name: str
    versions: list[int]
    latest: ModelVersion | None
    failed: dict[int, str]


class DataPlane:
    """Validates, admits and runs predictions. Thread-safe."""

    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        *,
        limits: Limits,
        capacity: int,
        mask_source: str = "host",
        max_invoke_bytes: int,
        default_chunk: int,
        is_ready: Callable[[], bool] = lambda: True,
        server_load: MutableSequence[int] | None = None,
        worker: int = 0,
        drift_window_rows: int = watch.DEFAULT_WINDOW,
        capture: Capture | None = None,
        default_variant: str = "float32",
        version_labels: VersionLabels | None = None,
    ) -> None:
        """Args:
        repository: the loaded model versions.
        metrics: where to count and time.
        limits: bounds on every request.
        capacity: requests in flight at once (running or waiting for an interpreter); more are refused.
        mask_source, max_invoke_bytes, default_chunk: how the sampler runs (``mcdrop.serving.core.Sampler``).
        is_ready: whether the server is up and not draining (for readiness answers).
        server_load: requests in flight per worker process of this server (shared memory); this data plane
            writes slot ``worker``. None: this process is the whole server.
        drift_window_rows: rows of each calibrated output this process's drift windows keep.
        capture: where answered rows go for labelling (``mcdrop.serving.capture``); None: nowhere.
        default_variant: the variant of requests that name none (``mcdrop serve --variant``).
        version_labels: names of versions (``mcdrop serve --version-labels``), for TensorFlow Serving's clients.
        """
        self.repository = repository
        self.metrics = metrics
        self.limits = limits
        self.sampler = Sampler(repository, mask_source=mask_source, max_invoke_bytes=max_invoke_bytes,
                               default_chunk=default_chunk, wide_invoke=self._lone,
                               default_variant=default_variant)  # fmt: skip
        self._is_ready = is_ready
        self._capacity = capacity
        self._inflight = 0
        self._lock = threading.Lock()
        self._server_load = server_load
        self._worker = worker
        self.watches = watch.Watches(drift_window_rows)
        self.capture = capture
        self.default_variant = default_variant
        self.version_labels = version_labels or VersionLabels()

    # Models -------------------------------------------------------------------------------------

    def model(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested (or latest) loaded version.

        Raises:
            NotFound: no such model, or that version is not loaded.
        """
        return self.repository.get(name, version)

    def labelled(self, name: str, label: str) -> ModelVersion:
        """The loaded version a label names (``mcdrop serve --version-labels``).

        Raises:
            NotFound: no such model, the label is not set, or its version is not loaded.
        """
        self.repository.get(name)  # an unknown model is named as such, before its labels
        return self.repository.get(name, self.version_labels.version(name, label))

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

    def model_status(self, name: str) -> ModelStatus:
        """One model's loaded and failed versions.

        Raises:
            NotFound: the repository has no version of this model, loaded or failed.
        """
        state = self.repository.states().get(name)
        if state is None or not (state.versions or state.failed):
            known = ", ".join(status.name for status in self.list_models()) or "none"
            raise NotFound(f"Model {name!r} is not in the repository. Known models: {known}.")
        return ModelStatus(name, sorted(state.versions), state.latest, dict(state.failed))

    def server_ready(self) -> bool:
        """The server is up and not draining."""
        return self._is_ready()

    def repository_problem(self) -> str | None:
        """Why the repository cannot be read now (loaded versions keep serving), or None when it can."""
        return self.repository.last_scan_error

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
        plan = self.sampler.plan(request, self.limits)
        with self._admitted():
            prediction = self.sampler.run(plan, deadline)
        self._observe(prediction, plan.version)
        if self.capture is not None:
            self.capture.offer(plan.version.manifest, plan.inputs, prediction, request.request_id)
        return prediction

    def predict_stream(self, request: PredictionRequest, deadline: float | None = None) -> Iterator[Prediction]:
        """Progressive estimates every ``chunk`` samples; the last has ``final=True``."""
        plan = self.sampler.plan(request, self.limits)
        with self._admitted():
            for prediction in self.sampler.stream(plan, deadline):
                if prediction.final:
                    self._observe(prediction, plan.version)
                    if self.capture is not None:
                        self.capture.offer(plan.version.manifest, plan.inputs, prediction, request.request_id)
                yield prediction

    def forget(self, model: str, version: int) -> None:
        """An unloaded version: stop watching its drift."""
        self.watches.forget(model, version)
        self.metrics.forget_drift(model, version)

    # Admission and load -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        with self._lock:
            if self._inflight >= self._capacity:
                raise ResourceExhausted(
                    f"Server at capacity: {self._inflight} requests in flight (limit {self._capacity}). Retry later."
                )
            self._inflight += 1
            if self._server_load is not None:
                self._server_load[self._worker] = self._inflight
        self.metrics.inflight.inc()
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                if self._server_load is not None:
                    self._server_load[self._worker] = self._inflight
            self.metrics.inflight.dec()

    def _lone(self, flops: float) -> bool:
        """The lone-request rule: an invoke worth ``LONE_REQUEST_FLOPS`` of a request that is the only one in flight
        on the whole server (so cores are idle) may use the many-thread interpreter."""
        if flops < LONE_REQUEST_FLOPS:
            return False
        load = self._server_load
        return (sum(load) if load is not None else self._inflight) == 1

    def _observe(self, prediction: Prediction, version: ModelVersion) -> None:
        """Count and time the answer, and watch its uncertainty (``version``: the one that answered, even if it has
        been unloaded since)."""
        queue, compute, samples = self.metrics.per_model(prediction.model, prediction.mode)
        queue.observe(prediction.queue_ms / 1e3)
        compute.observe(prediction.compute_ms / 1e3)
        samples.observe(prediction.samples)
        for output in prediction.outputs:
            names = WATCHED_CLASSIFICATION if output.task == Task.CLASSIFICATION else WATCHED_REGRESSION
            rows, abstained, histograms = self.metrics.watched(prediction.model, prediction.version,
                                                               prediction.mode.value, output.name, names)  # fmt: skip
            summary = output.summary
            for name in names:
                values = np.asarray(getattr(summary, name), np.float64).reshape(len(summary.mean), -1).mean(axis=1)
                observe_many(histograms[name], values)
            rows.inc(len(summary.mean))
            if output.decision is not None:
                abstained.inc(int(np.count_nonzero(output.decision.abstain)))
                rate = decision.calibrated_abstain_rate(version.manifest, output.name)
                self.metrics.calibrated(prediction.model, prediction.version, output.name, rate)
        for key, window in self.watches.observe(prediction, version.manifest):
            self.metrics.drift_window(key, window)
