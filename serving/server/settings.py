"""Server settings: one dataclass, filled from defaults, then ``MCDROP_*`` environment variables, then flags.

This is the only module that reads ``os.environ``. Each field's environment
variable is ``MCDROP_`` + the upper-cased field name, e.g. ``MCDROP_PORT=9000``,
and its flag is ``--`` + the field name with dashes (``--port``). The fields are the
single definition: ``mcdrop serve``'s flags and help texts are generated from them
(``add_arguments``), so defaults are written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, get_type_hints

from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.runtime.labels import VersionLabels

__all__ = ["ENV_PREFIX", "ServerSettings", "add_arguments", "load_settings"]

ENV_PREFIX = "MCDROP_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setting(
    default: Any, help: str, *, choices: Sequence[str] = (), aliases: Sequence[str] = (), flag: bool = True
) -> Any:
    """A settings field: its default, its help text (without the default), allowed values, and whether it
    has a flag (secrets do not: a flag's value is visible to every user of the machine in ``ps``)."""
    metadata = {"help": help, "choices": tuple(choices), "aliases": tuple(aliases), "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class ServerSettings:
    """Everything ``mcdrop serve`` can be told."""

    repository: str = setting("/models", "model repository directory (REPO/NAME/VERSION/)", aliases=["--repo"])
    host: str = setting("0.0.0.0", "address to bind the gRPC server (and metrics) to")
    port: int = setting(8500, "gRPC port (mcdrop API, Open Inference Protocol, health); 0 picks a free port")
    model_name: str = setting(
        "",
        "name of the model when --repository holds one version's files directly (KServe's /mnt/models); "
        "default: the name in its manifest",
    )
    http_port: int = setting(8501, "Open Inference Protocol REST port (same process and data plane); 0 turns it off")
    metrics_port: int = setting(8502, "Prometheus /metrics HTTP port; -1 turns it off, 0 picks a free port")
    workers: int = setting(
        0,
        "server processes sharing the gRPC and REST ports (SO_REUSEPORT), each with its own interpreters; "
        "0 = one per usable CPU (affinity and cgroup CPU quota)",
    )
    grpc_threads: int = setting(8, "gRPC worker threads per server process")
    pool_size: int = setting(2, "LiteRT interpreters per graph per model version (more requests wait in the queue)")
    interpreter_threads: int = setting(1, "threads inside each interpreter invoke")
    lone_request_threads: int = setting(
        0,
        "threads for a request that is alone in flight on the whole server (an extra interpreter per graph; idle "
        "cores shorten it, answers are bit-identical); 0 = the usable CPUs, 1 turns it off",
    )
    max_queue: int = setting(64, "requests that may wait for an interpreter; more get RESOURCE_EXHAUSTED")
    max_samples: int = setting(10_000, "largest Monte-Carlo sample count T per request")
    max_batch: int = setting(1024, "largest batch (rows) per request")
    max_sample_rows: int = setting(1_000_000, "largest T x batch per request (bounds memory and time)")
    mask_source: str = setting(
        "host",
        "masks of unseeded Monte-Carlo requests: host (fast 16-bit masks from a fresh seed the answer reports, "
        "so it can be replayed) or graph (LiteRT's in-graph random ops); seeded requests always use host masks",
        choices=("host", "graph"),
    )
    max_request_gflops: float = setting(
        1000.0, "largest compute per request: rows x (prefix + T x per-sample) FLOPs (1000: about 10 s of one core)"
    )
    max_invoke_mb: float = setting(
        64.0,
        "activation memory of one LiteRT invoke, in MiB: a request's T x B sample rows run in as many invokes as "
        "it takes (answers are identical for every value); per interpreter, so a worker's working memory is about "
        "this x its busy interpreters",
    )
    variant: str = setting(
        "float32",
        "the exported graphs that answer a request naming no variant, on versions exported with them (others answer "
        "float32; every answer says which answered)",
        choices=("float32", "float16", "dynamic-int8", "int8", "int8-io"),
    )
    version_labels: str = setting(
        "",
        "version labels TensorFlow Serving's clients may ask for: [MODEL:]LABEL=VERSION, comma-separated (e.g. "
        "stable=3,canary=4)",
    )
    default_chunk: int = setting(10, "samples per chunk of PredictStream and adaptive sampling when a request says 0")
    drift_window_rows: int = setting(1000, "rows of each calibrated output the drift gauges compare with the "
                                           "calibration (shared out between --workers)")  # fmt: skip
    capture_dir: str = setting("", "capture served rows for labelling: Parquet files under DIR/MODEL/ (needs the "
                                   "capture extra, pyarrow); default off")  # fmt: skip
    capture_when: str = setting("abstain", "which rows to capture: always, abstain (rows a calibrated version "
                                           "abstains on) or SCORE>VALUE (e.g. mutual_information>0.2)")  # fmt: skip
    capture_max_mb: float = setting(1024.0, "the most the capture directory may hold, in MiB; rows beyond are "
                                            "dropped and counted, files are never deleted")  # fmt: skip
    capture_file_mb: float = setting(64.0, "a capture file is published when it reaches this size (MiB) ...")
    capture_file_seconds: float = setting(60.0, "... or this age (seconds), and on shutdown")
    max_message_bytes: int = setting(64 * 1024 * 1024, "largest gRPC message, both directions")
    poll_seconds: float = setting(2.0, "repository scan interval for new, changed or removed versions; 0 turns it off")
    max_versions: int = setting(2, "newest versions kept loaded per model")
    grace_seconds: float = setting(20.0, "on SIGTERM: how long in-flight requests may take to finish")
    max_connection_age_seconds: float = setting(
        15.0,
        "close a client's connection after about this long (gRPC: a GOAWAY, in-flight calls finish; REST: "
        "'Connection: close' on the next answer), so clients reconnect and a restarted --workers process gets its "
        "share within this time; 0 = never",
    )
    connection_age_grace_seconds: float = setting(30.0, "gRPC: how long calls in flight on an aged connection may "
                                                        "still take")  # fmt: skip
    max_connection_requests: int = setting(0, "REST: close a keep-alive connection after this many requests; 0 = no "
                                              "limit")  # fmt: skip
    tls_cert: str = setting("", "PEM server certificate (chain): serve TLS, with --tls-key")
    tls_key: str = setting("", "PEM private key of --tls-cert")
    tls_client_ca: str = setting("", "PEM CA bundle: require client certificates it signed (mutual TLS)")
    auth_tokens: str = setting(
        "", "comma-separated bearer tokens; when set, every RPC but health needs one", flag=False
    )
    auth_token_file: str = setting("", "file of bearer tokens, one per line (re-read when it changes)")
    log_level: str = setting("INFO", "log level", choices=LOG_LEVELS)
    log_format: str = setting("json", "json (one object per line) or text", choices=("json", "text"))

    def validate(self) -> ServerSettings:
        """Check every field; raise ``InvalidArgument`` naming the setting, what was expected and received."""
        positive = ("grpc_threads", "pool_size", "interpreter_threads", "max_samples", "max_batch",
                    "max_sample_rows", "default_chunk", "max_message_bytes", "max_versions",
                    "drift_window_rows")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise _invalid(name, "an integer >= 1", getattr(self, name))
        for name in (
            "max_request_gflops",
            "max_invoke_mb",
            "capture_max_mb",
            "capture_file_mb",
            "capture_file_seconds",
        ):
            if not getattr(self, name) > 0:
                raise _invalid(name, "a number > 0", getattr(self, name))
        at_least_zero = (
            "workers",
            "lone_request_threads",
            "max_queue",
            "poll_seconds",
            "grace_seconds",
            "max_connection_age_seconds",
            "connection_age_grace_seconds",
            "max_connection_requests",
        )
        for name in at_least_zero:
            if not getattr(self, name) >= 0:
                raise _invalid(name, "a number >= 0", getattr(self, name))
        if not 0 <= self.port <= 65535:
            raise _invalid("port", "a port in 0-65535", self.port)
        if self.model_name:
            from mcdrop.serving.models.layout import MODEL_NAME

            if not MODEL_NAME.match(self.model_name):
                raise _invalid("model_name", "1-128 letters, digits, '.', '_' or '-'", self.model_name)
        if not 0 <= self.http_port <= 65535:
            raise _invalid("http_port", "a port in 1-65535, or 0 for no REST", self.http_port)
        if not -1 <= self.metrics_port <= 65535:
            raise _invalid("metrics_port", "a port in 0-65535, or -1 (off)", self.metrics_port)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgument("Settings tls_cert and tls_key go together. Expected both or neither.")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidArgument("Setting tls_client_ca (mutual TLS) needs tls_cert and tls_key.")
        from mcdrop.serving.capture.rule import parse_rule

        parse_rule(self.capture_when)
        VersionLabels.parse(self.version_labels)
        self.log_level = self.log_level.upper()
        for field in dataclasses.fields(self):
            choices = field.metadata["choices"]
            if choices and getattr(self, field.name) not in choices:
                raise _invalid(field.name, "one of " + ", ".join(choices), getattr(self, field.name))
        return self


def _invalid(name: str, expected: str, received: Any) -> InvalidArgument:
    return InvalidArgument(
        f"Invalid setting {name} (--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()}). "
        f"Expected {expected}. Received: {received!r}"
    )


def load_settings(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Defaults, then ``MCDROP_*`` variables, then ``overrides`` (flags; None = not given); validated.

    Raises:
        InvalidArgument: a value cannot be parsed or is out of range.
    """
    environ = os.environ if environ is None else environ
    hints = get_type_hints(ServerSettings)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ServerSettings):
        raw = environ.get(ENV_PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _parse(field.name, raw, hints[field.name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServerSettings(**values).validate()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, with the setting's help, default and environment variable.

    Every flag defaults to None ("not given"), so that ``load_settings`` can tell a flag from an
    environment variable; allowed values are checked by ``ServerSettings.validate`` for flags and
    variables alike, so both get the same one-line error.
    """
    hints = get_type_hints(ServerSettings)
    for field in dataclasses.fields(ServerSettings):
        if not field.metadata["flag"]:
            continue
        kind = hints[field.name]
        default = field.default
        shown = f"{default:g}" if isinstance(default, float) else (repr(default) if default == "" else str(default))
        choices = field.metadata["choices"]
        help_text = field.metadata["help"]
        if choices:
            help_text += f" ({'|'.join(choices)})"
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            *field.metadata["aliases"],
            dest=field.name,
            type=kind if kind in (int, float) else str,
            default=None,
            metavar=field.name.upper() if not choices else "|".join(choices),
            help=f"{help_text}; default {shown} (env {ENV_PREFIX}{field.name.upper()})".replace("%", "%%"),
        )


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
