"""Prometheus metrics of the server, kept in their own registry (one per server instance).

=======================================  ==========  ==========================================
metric                                   type        labels
=======================================  ==========  ==========================================
mcdrop_requests_total                    counter     api, method, code
mcdrop_request_seconds                   histogram   api, method
mcdrop_queue_seconds                     histogram   model  (waiting for an interpreter)
mcdrop_compute_seconds                   histogram   model, mode  (inference + uncertainty math)
mcdrop_samples_per_request               histogram   model, mode
mcdrop_inflight_requests                 gauge
mcdrop_model_version_loaded              gauge       model, version  (1 while loaded)
mcdrop_model_load_failures_total         counter     model
mcdrop_repository_scan_errors_total      counter
mcdrop_auth_failures_total               counter
mcdrop_worker_restarts_total             counter     (``--workers N``: workers that died and were replaced)
mcdrop_uncertainty                       histogram   model, version, mode, output, score  (per answered row)
mcdrop_rows_total                        counter     model, version, mode, output  (answered rows)
mcdrop_abstained_rows_total              counter     model, version, output  (rows answered ``abstain``)
mcdrop_drift_window_rows                 gauge       model, version, output, bin  (rows of the drift window per
                                                     calibration-decile bin; summed over workers)
mcdrop_drift_psi                         gauge       model, version, output  (PSI of the window vs the deciles)
mcdrop_drift_share_above_p90             gauge       model, version, output  (0.1 without drift)
mcdrop_calibration_abstain_rate          gauge       model, version, output  (share of calibration rows abstained on)
mcdrop_captured_rows_total               counter     model  (rows in published capture files)
mcdrop_capture_dropped_rows_total        counter     model, reason  (queue_full, budget, write_error, schema,
                                                     closed, error)
mcdrop_capture_write_errors_total        counter     reason  (ENOSPC, EROFS, ENOENT, …)
mcdrop_capture_files_total               counter     model  (published capture files)
mcdrop_capture_bytes_total               counter     model  (bytes of published capture files)
=======================================  ==========  ==========================================

``mcdrop_uncertainty`` holds the served scores (classification: mutual information, predictive entropy, variation
ratio; regression: std and predictive std) in log-spaced buckets from 1e-4 to 1e2.

With ``mcdrop serve --workers N`` (N > 1) every worker process writes its values to files in a
directory the supervisor owns (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``)
and the supervisor serves one ``/metrics`` for all of them: counters and histograms are summed over
workers (including workers that exited and were restarted), ``mcdrop_inflight_requests`` is summed over
live workers, and ``mcdrop_model_version_loaded`` is the maximum over live workers (1 while any worker
has the version loaded, 0 once none has).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mcdrop.serving.runtime import watch

__all__ = ["UNCERTAINTY_BUCKETS", "AggregatedMetrics", "Metrics", "observe_many"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SAMPLE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
DRIFT_PUBLISH_SECONDS = 0.25
UNCERTAINTY_BUCKETS = tuple(float(f"{10 ** (k / 4):.3g}") for k in range(-16, 9))
"""Four buckets per decade from 1e-4 to 1e2: nats, vote shares and output-unit spreads all fit."""


class _Endpoint:
    """A registry and the HTTP endpoint that exposes it."""

    def __init__(self) -> None:
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None
        self.registry = CollectorRegistry()

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose /metrics over HTTP (in a background thread); return the bound port."""
        self.close_http()
        self._http, self._http_thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close_http(self) -> None:
        """Stop the /metrics endpoint and free its port (no-op if it is not running)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._http_thread is not None:
                self._http_thread.join(timeout=5)
            self._http, self._http_thread = None, None


class Metrics(_Endpoint):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.requests = Counter(
            "mcdrop_requests", "RPCs by API, method and status code", ["api", "method", "code"], registry=r
        )
        self.request_seconds = Histogram(
            "mcdrop_request_seconds", "RPC latency", ["api", "method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "mcdrop_queue_seconds", "Time waiting for an interpreter", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.compute_seconds = Histogram(
            "mcdrop_compute_seconds", "Inference and uncertainty time", ["model", "mode"], buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.samples = Histogram(
            "mcdrop_samples_per_request", "Monte-Carlo samples per request", ["model", "mode"], buckets=SAMPLE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.inflight = Gauge("mcdrop_inflight_requests", "Requests admitted and not finished", registry=r,
                              multiprocess_mode="livesum")  # fmt: skip
        self.loaded = Gauge("mcdrop_model_version_loaded", "1 while a model version is loaded", ["model", "version"],
                            registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.load_failures = Counter("mcdrop_model_load_failures", "Model versions that failed to load", ["model"],
                                     registry=r)  # fmt: skip
        self.auth_failures = Counter(
            "mcdrop_auth_failures", "requests (gRPC and REST) refused for a missing or wrong token", registry=r
        )
        self.scan_errors = Counter("mcdrop_repository_scan_errors", "Repository scans that failed", registry=r)
        watched = ["model", "version", "mode", "output"]
        self.uncertainty = Histogram("mcdrop_uncertainty", "Served uncertainty scores, one per answered row",
                                     [*watched, "score"], buckets=UNCERTAINTY_BUCKETS, registry=r)  # fmt: skip
        self.rows = Counter("mcdrop_rows", "Answered rows", watched, registry=r)
        self.abstained = Counter("mcdrop_abstained_rows", "Rows answered with abstain", ["model", "version", "output"],
                                 registry=r)  # fmt: skip
        self.drift_rows = Gauge("mcdrop_drift_window_rows", "Rows of the drift window in each calibration-decile bin",
                                ["model", "version", "output", "bin"], registry=r,
                                multiprocess_mode="livesum")  # fmt: skip
        self.calibration_abstain_rate = Gauge(
            "mcdrop_calibration_abstain_rate", "Share of the calibration rows the version abstains on",
            ["model", "version", "output"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.captured_rows = Counter("mcdrop_captured_rows", "Rows in published capture files", ["model"], registry=r)
        self.capture_dropped = Counter("mcdrop_capture_dropped_rows", "Rows the capture rule chose but could not keep",
                                       ["model", "reason"], registry=r)  # fmt: skip
        self.capture_errors = Counter("mcdrop_capture_write_errors", "Capture files that failed", ["reason"],
                                      registry=r)  # fmt: skip
        self.capture_files = Counter("mcdrop_capture_files", "Published capture files", ["model"], registry=r)
        self.capture_bytes = Counter("mcdrop_capture_bytes", "Bytes of published capture files", ["model"],
                                     registry=r)  # fmt: skip
        self._drift_lock = threading.Lock()
        self._dirty: dict[tuple[str, int, str], watch.Window] = {}
        self._publisher: threading.Thread | None = None
        r.register(DriftCollector(self._published_drift))

    def drift_window(self, key: tuple[str, int, str], window: watch.Window) -> None:
        """Mark a drift window changed: its bin counts reach the gauges within ``DRIFT_PUBLISH_SECONDS``, off the
        request path (setting ten gauges per answer would cost a request tens of microseconds)."""
        with self._drift_lock:
            self._dirty[key] = window
            if self._publisher is None:
                self._publisher = threading.Thread(target=self._publish_loop, name="mcdrop-drift", daemon=True)
                self._publisher.start()

    def publish_drift(self) -> None:
        """Write every changed window's bin counts to ``mcdrop_drift_window_rows`` now."""
        with self._drift_lock:
            dirty, self._dirty = self._dirty, {}
        for (model, version, output), window in dirty.items():
            for index, count in enumerate(window.counts().tolist()):
                self.drift_rows.labels(model, str(version), output, str(index + 1)).set(count)

    def _publish_loop(self) -> None:
        while True:
            time.sleep(DRIFT_PUBLISH_SECONDS)
            self.publish_drift()

    def _published_drift(self) -> Iterable[Metric]:
        self.publish_drift()  # a scrape of this process's own endpoint sees every row answered so far
        return self.drift_rows.collect()

    @functools.cache  # noqa: B019 - one Metrics per server; label lookups cost microseconds per request
    def per_model(self, model: str, mode: str) -> tuple[Histogram, Histogram, Histogram]:
        """Queue, compute and samples histograms of one model and mode (labelled children, cached)."""
        return (
            self.queue_seconds.labels(model),
            self.compute_seconds.labels(model, mode),
            self.samples.labels(model, mode),
        )

    @functools.cache  # noqa: B019
    def watched(
        self, model: str, version: int, mode: str, output: str, scores: tuple[str, ...]
    ) -> tuple[Counter, Counter, dict[str, Histogram]]:
        """Rows, abstained rows and the histograms of the output's ``scores`` (labelled children, cached; only the
        task's scores: every series costs each scrape)."""
        labels = (model, str(version), mode, output)
        return (self.rows.labels(*labels), self.abstained.labels(model, str(version), output),
                {score: self.uncertainty.labels(*labels, score) for score in scores})  # fmt: skip

    @functools.cache  # noqa: B019
    def calibrated(self, model: str, version: int, output: str, abstain_rate: float | None) -> None:
        """Publish a version's calibration abstain rate, once (the alert on live abstention compares with it)."""
        if abstain_rate is not None:
            self.calibration_abstain_rate.labels(model, str(version), output).set(abstain_rate)

    # The capture writer's counters (``mcdrop.serving.capture.writer.Counters``) ---------------------

    def captured(self, model: str, rows: int) -> None:
        self.captured_rows.labels(model).inc(rows)

    def dropped(self, model: str, reason: str, rows: int) -> None:
        self.capture_dropped.labels(model, reason).inc(rows)

    def write_failed(self, reason: str) -> None:
        self.capture_errors.labels(reason).inc()

    def published(self, model: str, nbytes: int) -> None:
        self.capture_files.labels(model).inc()
        self.capture_bytes.labels(model).inc(nbytes)

    @functools.cache  # noqa: B019
    def rpc(self, api: str, method: str, code: str) -> Counter:
        return self.requests.labels(api, method, code)

    @functools.cache  # noqa: B019
    def rpc_seconds(self, api: str, method: str) -> Histogram:
        return self.request_seconds.labels(api, method)

    def forget_drift(self, model: str, version: int) -> None:
        """Drop an unloaded version's drift series: a stale PSI would keep its alert firing."""
        with self._drift_lock:
            self._dirty = {key: w for key, w in self._dirty.items() if key[:2] != (model, version)}
        for labels in [labels for labels in list(self.drift_rows._metrics) if labels[:2] == (model, str(version))]:
            with contextlib.suppress(KeyError):
                self.drift_rows.labels(*labels).set(0)  # what workers' value files keep (see "loaded" below)
                self.drift_rows.remove(*labels)

    def on_repository_event(self, event: str, model: str, version: int, detail: str) -> None:
        if event == "loaded":
            self.loaded.labels(model, str(version)).set(1)
        elif event == "unloaded":
            with contextlib.suppress(KeyError):
                self.loaded.labels(model, str(version)).set(0)  # what workers' value files keep (see above)
                self.loaded.remove(model, str(version))
        elif event == "failed":
            self.load_failures.labels(model).inc()
        elif event == "scan_failed":
            self.scan_errors.inc()


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every finite ``v``, in one vectorised step: a bucket count per bucket, not a
    Python loop over rows and bounds (prometheus_client's own ``observe`` checks each bound of each value)."""
    values = np.asarray(values, np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if not len(values):
        return
    bounds = np.asarray(histogram._upper_bounds, np.float64)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for index in np.flatnonzero(counts).tolist():
        histogram._buckets[index].inc(int(counts[index]))


class DriftCollector:
    """``mcdrop_drift_psi`` and ``mcdrop_drift_share_above_p90`` from the drift windows' bin counts — a process's own,
    or (the supervisor's) every worker's summed: one PSI for the whole server."""

    def __init__(self, source: Callable[[], Iterable[Metric]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts: dict[tuple[str, str, str], Any] = {}
        for family in self._source():
            if family.name != "mcdrop_drift_window_rows":
                continue
            for sample in family.samples:
                labels = sample.labels
                key = (labels["model"], labels["version"], labels["output"])
                bins = counts.setdefault(key, [0.0] * watch.BINS)
                bins[int(labels["bin"]) - 1] += sample.value
        psi = GaugeMetricFamily("mcdrop_drift_psi", "Population stability index of the drift window against the "
                                "calibration deciles (< 0.1 stable, > 0.25 major shift)",
                                labels=["model", "version", "output"])  # fmt: skip
        above = GaugeMetricFamily("mcdrop_drift_share_above_p90", "Share of the drift window above the calibration's "
                                  "90th percentile (0.1 without drift)",
                                  labels=["model", "version", "output"])  # fmt: skip
        for key, bins in sorted(counts.items()):
            array = np.asarray(bins)
            value = watch.psi(array)
            if value is not None:
                psi.add_metric(list(key), value)
            share = watch.share_above(array)
            if share is not None:
                above.add_metric(list(key), share)
        yield psi
        yield above


class _RestartCounter:
    """The supervisor's own counter, collected directly: a ``Counter`` made in a process whose prometheus_client runs
    in multiprocess mode would write to the workers' value files instead."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def inc(self) -> None:
        with self._lock:
            self._count += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("mcdrop_worker_restarts", "Workers that died and were replaced", value=self._count)


class AggregatedMetrics(_Endpoint):
    """One /metrics for every worker process that writes its values under ``directory``."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        multiprocess.MultiProcessCollector(self.registry, path=str(directory))  # type: ignore[no-untyped-call]
        self.worker_restarts = _RestartCounter()
        self.registry.register(self.worker_restarts)
        self.registry.register(DriftCollector(self._drift_files))

    def _drift_files(self) -> Iterable[Metric]:
        """The workers' drift bins: livesum gauges, so only those value files are merged (not every metric twice)."""
        files = glob.glob(str(self.directory / "gauge_livesum_*.db"))
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]

    def worker_exited(self, pid: int) -> None:
        """Drop an exited worker's live gauges (its counters and histograms stay in the sums)."""
        multiprocess.mark_process_dead(pid, path=str(self.directory))  # type: ignore[no-untyped-call]
