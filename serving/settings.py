"""Server settings: one dataclass, filled from defaults, then ``MCDROP_*`` environment variables, then flags.

This is the only module that reads ``os.environ``. Each field's environment
variable is ``MCDROP_`` + the upper-cased field name, e.g. ``MCDROP_PORT=9000``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, get_type_hints

from serving.errors import InvalidArgument

ENV_PREFIX = "MCDROP_"


@dataclasses.dataclass
class ServerSettings:
    """Everything ``mcdrop serve`` can be told."""

    repository: str = "/models"
    """Model repository directory (REPO/NAME/VERSION/)."""
    host: str = "0.0.0.0"
    """Address to bind the gRPC server to."""
    port: int = 8500
    """gRPC port (both the mcdrop API and the Open Inference Protocol); 0 picks a free port."""
    metrics_port: int = 8502
    """Prometheus metrics HTTP port; -1 disables the endpoint, 0 picks a free port."""
    workers: int = 8
    """gRPC worker threads."""
    pool_size: int = 2
    """LiteRT interpreters per graph per model version (requests beyond wait in the queue)."""
    interpreter_threads: int = 1
    """Threads inside each interpreter invoke."""
    max_queue: int = 64
    """Requests allowed to wait for an interpreter beyond those running; more get RESOURCE_EXHAUSTED."""
    max_samples: int = 10_000
    """Largest Monte-Carlo sample count T a request may ask for."""
    max_batch: int = 1024
    """Largest batch (rows per request)."""
    max_sample_rows: int = 1_000_000
    """Largest T x batch per request: bounds the memory and time one request can take."""
    mask_source: str = "host"
    """Masks of unseeded Monte-Carlo requests: ``host`` (fast 16-bit host masks from a fresh seed, which the
    answer reports) or ``graph`` (LiteRT's in-graph random ops in mc.tflite). Seeded requests always use host masks."""
    max_request_gflops: float = 50.0
    """Largest compute one request may ask for: rows x (prefix + T x per-sample) FLOPs from the manifest."""
    default_chunk: int = 10
    """Samples per chunk for PredictStream and adaptive sampling."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message, both directions."""
    poll_seconds: float = 2.0
    """How often the repository is scanned for new, changed or removed versions; 0 disables polling."""
    max_versions: int = 2
    """Newest versions kept loaded per model."""
    grace_seconds: float = 20.0
    """On SIGTERM: how long in-flight requests may take to finish."""
    tls_cert: str = ""
    """PEM server certificate (chain): set with ``tls_key`` to serve TLS on the gRPC port."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    tls_client_ca: str = ""
    """PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS)."""
    auth_tokens: str = ""
    """Comma-separated bearer tokens; when set (or ``auth_token_file``), every RPC but health needs one."""
    auth_token_file: str = ""
    """File of bearer tokens, one per line; re-read when it changes."""
    log_level: str = "INFO"
    log_format: str = "json"
    """``json`` (one object per line) or ``text``."""

    def validate(self) -> ServerSettings:
        positive = ("workers", "pool_size", "interpreter_threads", "max_samples", "max_batch", "max_sample_rows",
                    "default_chunk", "max_message_bytes", "max_versions")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidArgument(f"Setting {name} must be >= 1. Received: {getattr(self, name)}")
        if not self.max_request_gflops > 0:
            raise InvalidArgument(f"Setting max_request_gflops must be > 0. Received: {self.max_request_gflops}")
        if self.max_queue < 0 or self.poll_seconds < 0 or self.grace_seconds < 0:
            raise InvalidArgument("Settings max_queue, poll_seconds and grace_seconds must be >= 0.")
        if not 0 <= self.port <= 65535 or not -1 <= self.metrics_port <= 65535:
            raise InvalidArgument(
                f"Ports must be in 0-65535. Received: port={self.port} metrics_port={self.metrics_port}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgument("Settings tls_cert and tls_key go together. Expected both or neither.")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidArgument("Setting tls_client_ca (mutual TLS) needs tls_cert and tls_key.")
        if self.mask_source not in ("host", "graph"):
            raise InvalidArgument(f"Setting mask_source must be host or graph. Received: {self.mask_source!r}")
        if self.log_format not in ("json", "text"):
            raise InvalidArgument(f"Setting log_format must be json or text. Received: {self.log_format!r}")
        return self


def load_settings(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Defaults, then ``MCDROP_*`` variables, then ``overrides`` (flags); validated."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(ServerSettings)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ServerSettings):
        raw = environ.get(ENV_PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _parse(field.name, raw, hints[field.name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerSettings(**values).validate()


def _parse(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise InvalidArgument(
            f"Environment variable {ENV_PREFIX}{name.upper()} must be a {kind.__name__}. Received: {raw!r}"
        ) from None
    return raw
