"""A typed Python client for the mcdrop gRPC API. Every call has a deadline; results are numpy arrays.

    from mcdrop.serving.client import Client

    with Client("localhost:8500") as client:
        p = client.predict("digits", x, samples=100, seed=7)
        p.mean, p.mutual_information, p.predicted_label

        # a model with several inputs and outputs: arrays by input name, one estimate per output
        p = client.predict("wide_deep", {"numeric": numeric, "city": city_ids}, seed=7)
        p.outputs["churn"].mutual_information, p.outputs["spend"].lower

Failed calls raise ``RpcFailed`` carrying the gRPC status code name and the server's message.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.errors import InvalidArgument, RpcFailed
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.protocols import tensors
from mcdrop.serving.protocols.outputs import CLASSIFICATION_OUTPUTS, PER_ROW_OUTPUTS, REGRESSION_OUTPUTS

__all__ = ["Client", "ModelStatus", "Prediction", "decode_prediction", "serialized_request"]

DEFAULT_TIMEOUT = 30.0
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""What the client retries: a call refused as UNAVAILABLE (a worker that restarts, a connection that ends, a server
that drains) up to 3 more times within about 0.7 s. Every mcdrop call is safe to repeat: predictions change nothing."""
SERVICE_CONFIG = json.dumps({"methodConfig": [{"name": [{"service": "mcdrop.v1.Inference"},
                                                        {"service": "grpc.health.v1.Health"}],
                                               "retryPolicy": RETRY_POLICY}]})  # fmt: skip
"""The channel's gRPC service config (https://github.com/grpc/grpc/blob/master/doc/service_config.md)."""
STREAM_RESUMES = 3
STREAM_RESUME_BACKOFF = 0.1
"""A broken stream is resumed up to 3 times in a row, after 0.1, 0.2 and 0.4 s (``Client.predict_stream``)."""
_MODES = {"deterministic": pb.DETERMINISTIC, "monte_carlo": pb.MONTE_CARLO, "moments": pb.MOMENTS,
          None: pb.MODE_UNSPECIFIED}  # fmt: skip


@dataclasses.dataclass
class Prediction:
    """One prediction. Classification fields are None for regression models and vice versa."""

    model: str
    version: int
    mode: str
    samples: int
    seed: int | None
    mean: np.ndarray
    std: np.ndarray
    final: bool
    max_standard_error: float | None
    """None where the transport does not carry it (the REST client)."""
    queue_ms: float | None
    compute_ms: float | None
    sample_outputs: np.ndarray | None = None
    # classification
    predicted_class: np.ndarray | None = None
    predicted_label: list[str] | None = None
    predictive_entropy: np.ndarray | None = None
    expected_entropy: np.ndarray | None = None
    mutual_information: np.ndarray | None = None
    variation_ratio: np.ndarray | None = None
    class_labels: list[str] | None = None
    abstain: np.ndarray | None = None
    """A calibrated version (or a request with ``abstain_threshold``): per row, whether to abstain."""
    abstain_score: np.ndarray | None = None
    """Per row, the value of the score behind ``abstain``."""
    abstain_score_name: str | None = None
    abstain_threshold: float | None = None
    # regression
    lower: np.ndarray | None = None
    """Central predictive interval for y (see the proto's Regression message)."""
    upper: np.ndarray | None = None
    interval: float | None = None
    predictive_std: np.ndarray | None = None
    mean_lower: np.ndarray | None = None
    """Central interval of the samples: the uncertainty of the mean."""
    mean_upper: np.ndarray | None = None
    noise_variance: np.ndarray | None = None
    """Observation-noise variance per output; None when the model is epistemic only."""
    interval_calibration: str | None = None
    """A calibrated version: ``conformal`` or ``gaussian`` intervals; None for a version without calibration."""
    outputs: dict[str, Prediction] = dataclasses.field(default_factory=dict)
    """A model with several outputs: the estimate of each, by output name (the fields above are then the first
    output's). Empty for a single-output model."""
    variant: str = "float32"
    """The exported graphs that answered (``float32``, ``int8``, …)."""

    @property
    def task(self) -> str:
        return "classification" if self.predicted_class is not None else "regression"


@dataclasses.dataclass
class ModelStatus:
    name: str
    versions: list[int]
    latest: int
    task: str
    failed_versions: dict[int, str]


class Client:
    """Client for one server. Thread-safe (gRPC channels are)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        server_name: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Args:
        target: ``host:port``.
        timeout: default deadline of every call, in seconds.
        ca: PEM CA bundle to verify the server with; turns on TLS (the system roots if only ``cert`` is given).
        cert, key: PEM client certificate and key, for servers that require mutual TLS.
        token: bearer token sent as ``authorization: Bearer <token>``.
        server_name: name to verify in the server's certificate, if not the host in ``target``.
        """
        given = {name for name, _ in options}
        defaults = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.enable_retries", 1),
                    ("grpc.service_config", SERVICE_CONFIG)]  # fmt: skip
        opts = [*(option for option in defaults if option[0] not in given), *options]
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        if credentials is None and (ca or cert):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
            )
        if token:
            metadata = [*metadata, ("authorization", f"Bearer {token}")]
        self._channel = (
            grpc.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout
        self._metadata = list(metadata)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def predict(
        self,
        model: str,
        x: np.ndarray | Mapping[str, Any],
        *,
        version: int | None = None,
        mode: str | None = None,
        samples: int = 0,
        seed: int | None = None,
        return_samples: bool = False,
        interval: float | None = None,
        tolerance: float | None = None,
        max_samples: int = 0,
        chunk: int = 0,
        timeout: float | None = None,
        abstain_threshold: float | None = None,
        abstain_score: str | None = None,
        variant: str | None = None,
    ) -> Prediction:
        """Predict ``x`` ([B, ...] float32), or for a model with several inputs a mapping of input name → [B, ...]
        array; ``mode`` is ``deterministic``, ``monte_carlo``, ``moments`` or None (model default).

        With ``tolerance``, sampling is adaptive: the server stops once the largest standard
        error of the mean is at most ``tolerance`` (or at ``max_samples``). ``abstain_threshold`` and
        ``abstain_score`` override a calibrated version's abstention rule (or set one for any version).
        ``variant`` picks the exported graphs that answer (``float32``, ``int8``, …; None: the server's default).
        """
        request = encode_request(model, x, version, mode, samples, seed, return_samples, interval, tolerance,
                                max_samples, chunk, abstain_threshold=abstain_threshold,
                                abstain_score=abstain_score, variant=variant)  # fmt: skip
        return decode_prediction(self._call(self._stub.Predict, request, timeout))

    def predict_stream(
        self,
        model: str,
        x: np.ndarray | Mapping[str, Any],
        *,
        samples: int = 0,
        chunk: int = 0,
        seed: int | None = None,
        version: int | None = None,
        interval: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[Prediction]:
        """Progressive Monte-Carlo estimates every ``chunk`` samples; stop iterating to cancel.

        A stream that breaks with UNAVAILABLE after some estimates (a worker restarted, a connection aged out) is
        resumed, up to ``STREAM_RESUMES`` times in a row without a new estimate: the call is repeated with the seed
        its first estimate reported and the estimates already yielded are skipped, so the caller sees exactly the
        stream it would have seen. (gRPC's retry policy cannot do this: a stream that has answered is committed.) A
        stream without a reported seed (a server with ``--mask-source graph``) cannot be replayed and raises.
        """
        yielded = 0
        resumes = 0
        while True:
            request = encode_request(model, x, version, "monte_carlo", samples, seed, False, interval, None, 0, chunk)
            call = self._stub.PredictStream(request, timeout=timeout or self._timeout, metadata=self._metadata)
            received = 0
            try:
                for response in call:
                    received += 1
                    if received <= yielded:
                        continue  # replayed: the caller has it already
                    prediction = decode_prediction(response)
                    seed = prediction.seed if seed is None else seed
                    yielded += 1
                    resumes = 0  # progress: the budget is for resumes in a row that yield nothing new
                    yield prediction
                return
            except grpc.RpcError as exc:
                failure = _failed(exc)
                if failure.code != "UNAVAILABLE" or yielded == 0 or seed is None or resumes >= STREAM_RESUMES:
                    raise failure from None
                resumes += 1
                time.sleep(STREAM_RESUME_BACKOFF * 2 ** (resumes - 1))
            finally:
                call.cancel()

    def list_models(self, timeout: float | None = None) -> list[ModelStatus]:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [
            ModelStatus(m.name, list(m.versions), m.latest, m.task, dict(m.failed_versions)) for m in response.models
        ]

    def metadata(self, model: str, version: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """The version's manifest, as the server loaded it."""
        request = pb.GetModelMetadataRequest(model=model)
        if version is not None:
            request.version = version
        response = self._call(self._stub.GetModelMetadata, request, timeout)
        record: dict[str, Any] = json.loads(response.manifest_json)
        return {**record, "version": response.version, "loaded_versions": list(response.versions)}

    def manifest(self, model: str, version: int | None = None, timeout: float | None = None) -> Manifest:
        """The version's manifest as the server loaded it, typed (``mcdrop.serving.models.manifest``)."""
        return Manifest.from_json(self.metadata(model, version, timeout))

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """``SERVING``, ``NOT_SERVING`` or ``SERVICE_UNKNOWN`` for ``service`` ("" = the whole server)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _failed(exc) from None


def encode_request(
    model: str,
    x: np.ndarray | Mapping[str, Any],
    version: int | None,
    mode: str | None,
    samples: int,
    seed: int | None,
    return_samples: bool,
    interval: float | None,
    tolerance: float | None,
    max_samples: int,
    chunk: int,
    *,
    abstain_threshold: float | None = None,
    abstain_score: str | None = None,
    variant: str | None = None,
) -> pb.PredictRequest:
    """The mcdrop.v1 ``PredictRequest`` that ``Client.predict`` sends (also for load generators)."""
    if mode not in _MODES:
        raise InvalidArgument(f"Invalid mode {mode!r}. Expected deterministic, monte_carlo, moments or None.")
    request = pb.PredictRequest(
        model=model,
        input=None if isinstance(x, Mapping) else tensors.encode(np.asarray(x)),
        inputs={str(k): tensors.encode(np.asarray(v)) for k, v in x.items()} if isinstance(x, Mapping) else None,
        mode=_MODES[mode],
        samples=samples,
        return_samples=return_samples,
        max_samples=max_samples,
        chunk=chunk,
        abstain_score=abstain_score or "",
        variant=variant or "",
    )
    optional = (("version", version), ("seed", seed), ("interval", interval), ("tolerance", tolerance),
                ("abstain_threshold", abstain_threshold))  # fmt: skip
    for name, value in optional:
        if value is not None:
            setattr(request, name, value)
    return request


def serialized_request(model: str, x: np.ndarray, mode: str | None, samples: int) -> bytes:
    """The wire bytes of a ``Predict`` call of ``model`` on ``x`` (for load generators that send them as they are)."""
    return bytes(encode_request(model, x, None, mode, samples, None, False, None, None, 0, 0).SerializeToString())


def _read(path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"Cannot read {path}: {exc}") from None


def decode_prediction(response: pb.PredictResponse) -> Prediction:
    mode = pb.Mode.Name(response.mode).lower()
    common: dict[str, Any] = {
        "model": response.model,
        "version": response.version,
        "mode": mode,
        "samples": response.samples,
        "seed": response.seed if response.HasField("seed") else None,
        "final": response.final,
        "max_standard_error": response.max_standard_error,
        "queue_ms": response.queue_ms,
        "compute_ms": response.compute_ms,
        "variant": response.variant or "float32",
    }
    if response.outputs:
        outputs = {o.name: _decode_result(o, common) for o in response.outputs}
        first = next(iter(outputs.values()))
        return dataclasses.replace(first, outputs=outputs)
    return _decode_result(response, common)


def _per_row(values: Any, pixel_shape: Sequence[int]) -> np.ndarray:
    """A repeated per-row field; for a dense output, reshaped to ``[B, *pixel_shape]`` (sent flattened)."""
    array = np.asarray(values)
    return array.reshape(-1, *pixel_shape) if len(pixel_shape) else array


def _decode_result(message: pb.PredictResponse | pb.OutputResult, common: dict[str, Any]) -> Prediction:
    """One output's estimate (a response's ``result``, or one of its ``outputs``)."""
    common = {**common, "sample_outputs": tensors.decode(message.sample_outputs, "samples")
              if message.HasField("sample_outputs") else None}  # fmt: skip
    if message.HasField("classification"):
        c = message.classification
        per_row: dict[str, Any] = {name: _per_row(getattr(c, name), c.pixel_shape) for name in PER_ROW_OUTPUTS}
        per_row["predicted_class"] = per_row["predicted_class"].astype(np.int64)
        per_class: dict[str, Any] = {
            name: tensors.decode(getattr(c, name), name) for name in CLASSIFICATION_OUTPUTS if name not in per_row
        }
        abstain: dict[str, Any] = {} if not c.abstain_score_name else {
            "abstain": _per_row(c.abstain, c.pixel_shape).astype(bool),
            "abstain_score": _per_row(c.abstain_score, c.pixel_shape),
            "abstain_score_name": c.abstain_score_name,
            "abstain_threshold": c.abstain_threshold if c.HasField("abstain_threshold") else None,
        }  # fmt: skip
        return Prediction(
            predicted_label=list(c.predicted_label) or None,
            class_labels=list(c.class_labels) or None,
            **abstain,
            **per_class,
            **per_row,
            **common,
        )
    r = message.regression
    outputs: dict[str, Any] = {name: tensors.decode(getattr(r, name), name) for name in REGRESSION_OUTPUTS}
    return Prediction(
        interval=r.interval,
        noise_variance=tensors.decode(r.noise_variance, "noise_variance") if r.HasField("noise_variance") else None,
        interval_calibration=r.interval_calibration or None,
        **outputs,
        **common,
    )


def _failed(exc: grpc.RpcError) -> RpcFailed:
    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return RpcFailed(code, details or "")
