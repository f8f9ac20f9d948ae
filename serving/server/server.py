"""One server process: repository, data plane, the gRPC and REST transports, health, reflection, metrics.

Lifecycle: ``start()`` loads the repository, binds the port, starts polling and
marks health SERVING; ``stop()`` marks health NOT_SERVING, stops accepting new
RPCs and gives in-flight ones ``grace_seconds`` to finish. ``run()`` wires
SIGTERM/SIGINT to ``stop()`` for the command line and containers.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import threading
from collections.abc import Callable, MutableSequence
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mcdrop.serving.core.invokes import MIB
from mcdrop.serving.core.requests import Limits
from mcdrop.serving.errors import InvalidArgument, Unavailable
from mcdrop.serving.grpc import mcdrop_v1 as grpc_api
from mcdrop.serving.grpc import oip, tfserving
from mcdrop.serving.grpc.auth import AuthInterceptor
from mcdrop.serving.grpc.reflection import reflection_pool
from mcdrop.serving.models.repository import ModelRepository
from mcdrop.serving.rest.connections import ConnectionRecycling
from mcdrop.serving.rest.http_server import HttpServer
from mcdrop.serving.runtime.auth import BearerAuth
from mcdrop.serving.runtime.dataplane import DataPlane
from mcdrop.serving.runtime.labels import VersionLabels
from mcdrop.serving.runtime.metrics import Metrics
from mcdrop.serving.runtime.tokens import TokenStore
from mcdrop.serving.server import cpus
from mcdrop.serving.server.settings import ServerSettings

if TYPE_CHECKING:
    from mcdrop.serving.capture.writer import CaptureWriter

__all__ = [
    "REPOSITORY_HEALTH",
    "Server",
    "capture_writer",
    "check_capture_installed",
    "data_plane",
    "run",
    "serve_until_signalled",
]

log = logging.getLogger("mcdrop.server")
REPOSITORY_HEALTH = "mcdrop.repository"


class Server:
    """One mcdrop server. Cheap to construct; ``start()`` does the work."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        reuse_port: bool = False,
        server_load: MutableSequence[int] | None = None,
        worker: int = 0,
    ) -> None:
        """A worker of ``mcdrop serve --workers`` binds with ``reuse_port`` (SO_REUSEPORT) and counts its requests
        in flight in slot ``worker`` of the shared ``server_load``."""
        self.settings = settings
        self.reuse_port = reuse_port
        self.metrics = Metrics()
        self.repository = ModelRepository(
            Path(settings.repository),
            pool_size=settings.pool_size,
            interpreter_threads=settings.interpreter_threads,
            lone_request_threads=settings.lone_request_threads or cpus.usable_cpus(),
            max_versions=settings.max_versions,
            listener=self._on_repository_event,
            model_name=settings.model_name or None,
        )
        self.plane = data_plane(self.repository, settings, self.metrics, is_ready=self.ready,
                                server_load=server_load, worker=worker)  # fmt: skip
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.tokens = TokenStore(settings.auth_tokens, settings.auth_token_file)
        self.auth = BearerAuth(self.tokens, self.metrics)
        self.services = [grpc_api.SERVICE_NAME, oip.SERVICE_NAME, *tfserving.SERVICE_NAMES]
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self._grpc: grpc.Server | None = None
        self._http: HttpServer | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self.capture: CaptureWriter | None = None

    def start(self) -> int:
        """Load models, start serving; return the bound gRPC port."""
        settings = self.settings
        for service in ("", *self.services):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.repository.scan()
        if settings.capture_dir:
            self.capture = self.plane.capture = capture_writer(settings, self.metrics)
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", int(self.reuse_port)),
            *connection_age_options(settings),
        ]
        interceptors = []
        if self.tokens.enabled:
            interceptors.append(AuthInterceptor(self.auth))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.grpc_threads), options=options, interceptors=interceptors
        )
        reflected = [api.add_to_server(server, self.plane, self.metrics) for api in (grpc_api, oip)]
        reflected += tfserving.add_to_server(server, self.plane, self.metrics)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflected += [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(reflected, server, pool=reflection_pool())
        address = f"{settings.host}:{settings.port}"
        credentials = server_credentials(settings)
        self.port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        if self.port == 0:
            raise Unavailable(f"Could not bind {address}: the port is taken or the address is not local.")
        server.start()
        self._grpc = server
        if settings.http_port:
            self._start_http()
        if settings.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(settings.metrics_port, settings.host)
        self.repository.start_polling(settings.poll_seconds)
        for service in ("", *self.services):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._started.set()
        loaded = {name: sorted(state.versions) for name, state in self.repository.states().items()}
        log.info(
            "serving",
            extra={
                "port": self.port,
                "http_port": self.http_port,
                "metrics_port": self.metrics_port,
                "models": loaded,
                "host": settings.host,
                "tls": bool(settings.tls_cert),
                "mutual_tls": bool(settings.tls_client_ca),
                "auth": self.tokens.enabled,
            },
        )
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new RPCs, let in-flight ones finish within ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        log.info("stopping", extra={"grace_seconds": grace})
        stopping = []
        if self._http is not None:  # both transports drain at once, within the same grace
            http = self._http
            stopping.append(threading.Thread(target=http.stop, args=(grace,), name="rest-stop"))
            stopping[-1].start()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        for thread in stopping:
            thread.join()
        if self.capture is not None:  # every answered request has been offered: publish what is buffered
            flushed = self.capture.close(timeout=max(10.0, grace))
            log.info("capture closed", extra={"flushed": flushed, "directory": self.settings.capture_dir})
        self.metrics.close_http()
        self.repository.stop()
        log.info("stopped")

    def _start_http(self) -> None:
        from mcdrop.serving.rest import app as rest

        settings = self.settings
        tls = (settings.tls_cert, settings.tls_key, settings.tls_client_ca) if settings.tls_cert else None
        app = rest.make_app(self.plane, self.metrics, self.auth, settings.max_message_bytes)
        recycled = ConnectionRecycling(app, settings.max_connection_age_seconds, settings.max_connection_requests)
        self._http = HttpServer(
            recycled, settings.host, settings.http_port, settings.grace_seconds, tls, reuse_port=self.reuse_port
        )
        self.http_port = self._http.start()

    def ready(self) -> bool:
        """Started and not shutting down: what health SERVING and the OIP ServerReady report."""
        return self._started.is_set() and not self._stopped.is_set()

    def wait(self) -> None:
        self._stopped.wait()

    def _on_repository_event(self, event: str, model: str, version: int, detail: str) -> None:
        self.metrics.on_repository_event(event, model, version, detail)
        if event == "unloaded":
            self.plane.forget(model, version)
        if event.startswith("scan_"):
            # The repository's own health: NOT_SERVING while it cannot be read (loaded models keep serving).
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if event == "scan_ok"
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            if not self._stopped.is_set():
                self.health.set(REPOSITORY_HEALTH, status)
            return
        log.info(f"model version {event}", extra={"model": model, "version": version, "detail": detail})


def data_plane(
    repository: ModelRepository,
    settings: ServerSettings,
    metrics: Metrics | None = None,
    *,
    is_ready: Callable[[], bool] = lambda: True,
    server_load: MutableSequence[int] | None = None,
    worker: int = 0,
) -> DataPlane:
    """The data plane a server with ``settings`` runs (also what ``mcdrop bench`` measures in process)."""
    limits = Limits(
        max_samples=settings.max_samples,
        max_batch=settings.max_batch,
        max_sample_rows=settings.max_sample_rows,
        max_request_gflops=settings.max_request_gflops,
    )
    return DataPlane(repository, metrics or Metrics(), limits=limits, capacity=settings.pool_size + settings.max_queue,
                     mask_source=settings.mask_source, max_invoke_bytes=int(settings.max_invoke_mb * MIB),
                     default_chunk=settings.default_chunk, is_ready=is_ready, server_load=server_load,
                     worker=worker, default_variant=settings.variant,
                     version_labels=VersionLabels.parse(settings.version_labels),
                     drift_window_rows=-(-settings.drift_window_rows // max(1, settings.workers)))  # fmt: skip


def connection_age_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """gRPC's connection age: after about ``max_connection_age_seconds`` (gRPC adds ± 10 % jitter, so clients do not
    reconnect at once) the server sends a GOAWAY; calls in flight may take ``connection_age_grace_seconds`` more."""
    if settings.max_connection_age_seconds <= 0:
        return []
    return [("grpc.max_connection_age_ms", round(settings.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", round(settings.connection_age_grace_seconds * 1000))]  # fmt: skip


def check_capture_installed() -> None:
    """Raises ``InvalidArgument`` when ``--capture-dir`` cannot work: pyarrow is not installed. (Looked up, not
    imported: the ``--workers`` supervisor never writes, and pyarrow would add 30 MB to it.)"""
    if importlib.util.find_spec("pyarrow") is None:
        raise InvalidArgument(
            "--capture-dir needs pyarrow, which this install lacks. Expected: pip install 'mcdrop[capture]', or no "
            "--capture-dir."
        )


def capture_writer(settings: ServerSettings, metrics: Metrics) -> CaptureWriter:
    """The capture writer of ``--capture-dir``.

    Raises:
        InvalidArgument: pyarrow is not installed.
    """
    check_capture_installed()
    from mcdrop.serving.capture.rule import parse_rule
    from mcdrop.serving.capture.writer import CaptureOptions, CaptureWriter

    options = CaptureOptions(
        Path(settings.capture_dir),
        parse_rule(settings.capture_when),
        max_bytes=int(settings.capture_max_mb * MIB),
        file_bytes=int(settings.capture_file_mb * MIB),
        file_seconds=settings.capture_file_seconds,
    )
    writer = CaptureWriter(options, metrics)
    log.info("capturing", extra={"directory": settings.capture_dir, "when": str(options.rule)})
    return writer


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS (and, with a client CA, mutual TLS) credentials from the settings' PEM files, or None."""
    if not settings.tls_cert:
        return None
    try:
        key, cert = Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes()
        client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    except OSError as exc:
        raise InvalidArgument(f"Cannot read a TLS file: {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=bool(client_ca))


def run(settings: ServerSettings) -> int:
    """Serve in this process until SIGTERM or SIGINT; return the exit code (0 after a graceful stop).
    (``mcdrop serve --workers N`` with N > 1 runs ``mcdrop.serving.server.supervisor.Supervisor`` instead.)"""
    return serve_until_signalled(Server(settings))


def serve_until_signalled(server: Server, on_started: Callable[[], None] = lambda: None) -> int:
    """Start ``server``, call ``on_started``, serve until SIGTERM or SIGINT, drain; return 0."""
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a worker leaves Ctrl-C to its supervisor
        signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
        on_started()
        # Wait with a timeout: the kernel may deliver SIGTERM to any thread, and Python runs the handler only
        # when the main thread returns to the interpreter, which a wait without timeout would never do.
        while not stop_requested.wait(timeout=0.2):
            pass
    finally:
        server.stop()
    return 0
