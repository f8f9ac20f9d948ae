"""``mcdrop serve --workers N``: N server processes on the same ports, so that requests use every core.

One Python process runs request work under one interpreter lock, so a single server
saturates one core well before LiteRT does. With N > 1 workers, ``mcdrop serve`` becomes
a supervisor: it checks that the ports can be bound, starts N worker processes (each a
complete server — repository, interpreter pools, data plane, gRPC, REST — bound with
SO_REUSEPORT, so the kernel spreads incoming connections over them), and serves one
aggregated ``/metrics`` (see ``mcdrop.serving.runtime.metrics``). A worker binds its ports only
after its repository has loaded, so a starting worker never receives connections.

Across workers:

* **health and reload**: every worker answers health for itself and polls the repository
  itself (a new version is served by all workers within ``poll_seconds`` of each other);
* **limits**: every request limit applies per request in every worker; admission
  (``pool_size + max_queue`` requests in flight) applies per worker, so the server as a
  whole admits N times as many;
* **SIGTERM / SIGINT**: the supervisor passes SIGTERM to every worker, which drains its
  in-flight requests within ``grace_seconds``; the exit code is 0 when every worker drained;
* **crashes**: a worker that dies is restarted (its connections fail, the others keep
  serving); more than ``MAX_RESTARTS`` restarts within ``RESTART_WINDOW`` seconds, or a
  worker that fails while starting, stops the whole server with exit code 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from mcdrop.serving.server.settings import ServerSettings

__all__ = ["Supervisor"]

log = logging.getLogger("mcdrop.server")
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STARTUP_TIMEOUT = 120.0
METRICS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


class Supervisor:
    """Starts, watches and stops ``count`` worker processes of one server."""

    def __init__(self, settings: ServerSettings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked gRPC or LiteRT state
        self._workers: dict[int, BaseProcess] = {}
        self._ready: dict[int, Any] = {}
        self._restarts: list[float] = []
        self._load = self._context.RawArray("i", count)  # requests in flight per worker: "alone" is server-wide
        self._stop = threading.Event()

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return 0 when every worker drained, else 1."""
        from mcdrop.serving.runtime.metrics import AggregatedMetrics

        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        reserved = self._reserve_ports()
        directory = Path(tempfile.mkdtemp(prefix="mcdrop-metrics-"))
        os.environ[METRICS_DIRECTORY] = str(directory)  # inherited by every worker at spawn
        metrics = AggregatedMetrics(directory)
        outcome = 1
        try:
            for index in range(self.count):
                self._spawn(index)
            if self._wait_started():
                metrics_port = None
                if self.settings.metrics_port >= 0:
                    metrics_port = metrics.serve_http(self.settings.metrics_port, self.settings.host)
                log.info("serving", extra={"workers": self.count, "port": self.settings.port,
                                           "http_port": self.settings.http_port or None, "metrics_port": metrics_port,
                                           "pids": [p.pid for p in self._workers.values()]})  # fmt: skip
                outcome = self._watch(metrics)
        finally:
            codes = self._stop_workers()
            metrics.close_http()
            for sock in reserved:
                sock.close()
            os.environ.pop(METRICS_DIRECTORY, None)
            shutil.rmtree(directory, ignore_errors=True)
            log.info("stopped", extra={"workers": self.count, "exit_codes": codes})
        return 0 if outcome == 0 and all(code == 0 for code in codes) else 1

    def _reserve_ports(self) -> list[socket.socket]:
        """Bind the shared ports here first, with SO_REUSEPORT and without listening: a port held by another
        program fails now, in one line, rather than in N workers; port 0 becomes one free port for all."""
        from mcdrop.serving.rest.http_server import reuse_port_socket

        grpc_socket = reuse_port_socket(self.settings.host, self.settings.port)
        self.settings = dataclasses.replace(self.settings, port=int(grpc_socket.getsockname()[1]))
        if not self.settings.http_port:
            return [grpc_socket]
        return [grpc_socket, reuse_port_socket(self.settings.host, self.settings.http_port)]

    def _spawn(self, index: int) -> None:
        ready = self._context.Event()
        settings = dataclasses.replace(self.settings, workers=1, metrics_port=-1)
        process = self._context.Process(
            target=_worker_main, args=(settings, index, ready, self._load), name=f"mcdrop-worker-{index}", daemon=False
        )
        process.start()
        self._workers[index], self._ready[index] = process, ready

    def _wait_started(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(event.is_set() for event in self._ready.values()):
            failed = [i for i, p in self._workers.items() if p.exitcode is not None]
            if failed or self._stop.is_set() or time.monotonic() > deadline:
                if failed:
                    code = self._workers[failed[0]].exitcode
                    log.error("worker failed to start", extra={"worker": failed[0], "exit_code": code})
                elif not self._stop.is_set():
                    log.error("workers not ready in time", extra={"timeout_seconds": STARTUP_TIMEOUT})
                return self._stop.is_set() and not failed
            time.sleep(0.05)
        return True

    def _watch(self, metrics: Any) -> int:
        # Wait in slices: signals that land on another thread still reach the handler (see server.run).
        while not self._stop.wait(timeout=0.2):
            for index, process in list(self._workers.items()):
                if process.exitcode is None:
                    continue
                metrics.worker_exited(process.pid)
                self._load[index] = 0  # its requests died with it
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
                if len(self._restarts) > MAX_RESTARTS:
                    log.error("workers keep dying; stopping", extra={"restarts": len(self._restarts),
                                                                     "window_seconds": RESTART_WINDOW})  # fmt: skip
                    return 1
                log.warning("worker died; restarting", extra={"worker": index, "exit_code": process.exitcode})
                metrics.worker_restarts.inc()
                self._spawn(index)
        return 0

    def _stop_workers(self) -> list[int | None]:
        """SIGTERM every worker, wait for each to drain, kill what is still running after the grace period.

        Returns the exit codes; a worker stopped while still starting (no requests yet, no handler yet) counts as 0.
        """
        for process in self._workers.values():
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_seconds + 10
        codes: list[int | None] = []
        for index, process in self._workers.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(5)
            starting = process.exitcode == -signal.SIGTERM and not self._ready[index].is_set()
            codes.append(0 if starting else process.exitcode)
        return codes

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        self._stop.set()


class _WorkerField(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def _worker_main(settings: ServerSettings, index: int, ready: Any, load: Any) -> None:
    """One worker: a complete server on the shared ports until SIGTERM (exit code 0 after draining)."""
    from mcdrop.serving.server import logs
    from mcdrop.serving.server.server import Server, serve_until_signalled

    logs.configure(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(index))
    # Ctrl-C reaches the whole process group: the supervisor alone decides, and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = Server(settings, reuse_port=True, server_load=load, worker=index)
    code = serve_until_signalled(server, on_started=ready.set)
    raise SystemExit(code)
