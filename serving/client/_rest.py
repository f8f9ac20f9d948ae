"""A client of the Open Inference Protocol over REST, for ``mcdrop predict --server http(s)://HOST:PORT``.

Standard library only (``http.client``, ``ssl``): the CLI gains no dependency. Tensors travel with the binary
tensor data extension both ways (``mcdrop.serving.rest.codec``), and the answer becomes the same ``Prediction`` the
gRPC client returns. What the OIP does not carry is ``None``: class labels (``predicted_label``), the adaptive
``tolerance`` (refused), the server-side timings and the standard error; the observation-noise variance of a
regression output is recovered as predictive_std² − std².
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.client._grpc import Prediction
from mcdrop.serving.errors import InvalidArgument, RpcFailed
from mcdrop.serving.protocols.oip import DATATYPES
from mcdrop.serving.protocols.outputs import CLASSIFICATION_OUTPUTS, REGRESSION_OUTPUTS

__all__ = ["RestClient"]

HTTP_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
              429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
"""HTTP status → the gRPC status name ``RpcFailed`` carries (the CLI's exit codes follow it); others: INTERNAL."""
HEADER_LENGTH = "Inference-Header-Content-Length"
DEFAULT_TIMEOUT = 30.0


class RestClient:
    """One server's REST endpoint (``http://HOST:PORT`` or ``https://…``); a new connection per call."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        server_name: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidArgument(f"Invalid server URL {url!r}. Expected http://HOST:PORT or https://HOST:PORT.")
        if server_name is not None:
            raise InvalidArgument("--server-name is for gRPC. Over REST, name the server as its certificate does in "
                                  "the URL (https://NAME:PORT).")  # fmt: skip
        if (cert is None) != (key is None):
            raise InvalidArgument("Mutual TLS needs both a client certificate and its key.")
        self._https = parsed.scheme == "https" or ca is not None
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 80)
        self._timeout = timeout
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._context: ssl.SSLContext | None = None
        if self._https:
            self._context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
            if cert is not None:
                self._context.load_cert_chain(str(cert), str(key))

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def close(self) -> None:
        return None

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        """The model metadata (OIP), with mcdrop's ``parameters``."""
        _, body = self._request("GET", _model_path(model, version), None, {})
        return dict(json.loads(body))

    def predict(
        self,
        model: str,
        x: np.ndarray | Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        mode: str | None = None,
        samples: int = 0,
        seed: int | None = None,
        tolerance: float | None = None,
        interval: float | None = None,
        abstain_threshold: float | None = None,
        abstain_score: str | None = None,
        variant: str | None = None,
    ) -> Prediction:
        if tolerance is not None:
            raise InvalidArgument("Adaptive sampling (--tolerance) is a gRPC feature. Expected a gRPC server "
                                  "address (HOST:PORT) or no --tolerance.")  # fmt: skip
        inputs = {"x": np.asarray(x)} if not isinstance(x, Mapping) else {k: np.asarray(v) for k, v in x.items()}
        raw = [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in inputs.values()]
        parameters: dict[str, Any] = {"binary_data_output": True}
        chosen = (("mode", mode), ("seed", seed), ("interval", interval), ("abstain_threshold", abstain_threshold),
                  ("abstain_score", abstain_score), ("variant", variant))  # fmt: skip
        for name, value in chosen:
            if value is not None:
                parameters[name] = value
        if samples:
            parameters["mc_samples"] = samples
        header = {
            "inputs": [{"name": name, "datatype": "FP32", "shape": list(value.shape),
                        "parameters": {"binary_data_size": len(data)}}
                       for (name, value), data in zip(inputs.items(), raw, strict=True)],
            "parameters": parameters,
        }  # fmt: skip
        text = json.dumps(header).encode()
        headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(text))}
        response_headers, body = self._request("POST", f"{_model_path(model, version)}/infer", text + b"".join(raw),
                                               headers)  # fmt: skip
        return _prediction(body, response_headers.get(HEADER_LENGTH.lower()), 0.95 if interval is None else interval)

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[dict[str, str], bytes]:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                     context=self._context)  # fmt: skip
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.request(method, path, body=body, headers={**self._headers, **headers})
            response = connection.getresponse()
            content = response.read()
            found = {k.lower(): v for k, v in response.getheaders()}
        except (OSError, http.client.HTTPException) as exc:
            code = "DEADLINE_EXCEEDED" if isinstance(exc, TimeoutError) else "UNAVAILABLE"
            raise RpcFailed(code, f"{self._host}:{self._port}: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            try:
                message = str(json.loads(content)["error"])
            except (ValueError, KeyError, TypeError):
                message = content[:200].decode("utf-8", "replace")
            raise RpcFailed(HTTP_CODES.get(response.status, "INTERNAL"), f"HTTP {response.status}: {message}")
        return found, content


def _model_path(model: str, version: int | None) -> str:
    name = urllib.parse.quote(model, safe="")
    return f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "")


def _prediction(body: bytes, header_length: str | None, interval: float) -> Prediction:
    """The gRPC client's ``Prediction`` from an infer response (binary or JSON tensors)."""
    size = int(header_length) if header_length is not None else len(body)
    head = json.loads(body[:size])
    arrays: dict[str, np.ndarray] = {}
    offset = size
    for output in head["outputs"]:
        dtype = DATATYPES[output["datatype"]][0]
        binary = (output.get("parameters") or {}).get("binary_data_size")
        if binary is not None:
            values = np.frombuffer(body, dtype=dtype, count=math.prod(output["shape"]), offset=offset)
            offset += int(binary)
        else:
            values = np.asarray(output["data"], dtype=dtype)
        arrays[output["name"]] = values.reshape(output["shape"]).copy()
    echoed = head.get("parameters") or {}
    common: dict[str, Any] = {
        "model": head["model_name"],
        "version": int(head["model_version"]),
        "mode": str(echoed.get("mode", "")),
        "samples": int(echoed.get("mc_samples", 0)),
        "seed": echoed.get("seed"),
        "final": True,
        "max_standard_error": None,
        "queue_ms": None,
        "compute_ms": None,
        "variant": str(echoed.get("variant", "float32")),
    }
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, array in arrays.items():
        output, _, field = name.rpartition("/")
        groups.setdefault(output, {})[field] = array
    found = {output: _output(fields, echoed, output, common, interval) for output, fields in groups.items()}
    if list(found) == [""]:
        return found[""]
    first = next(iter(found.values()))
    return dataclasses.replace(first, outputs=found)


def _output(
    fields: dict[str, np.ndarray], echoed: dict[str, Any], output: str, common: dict[str, Any], interval: float
) -> Prediction:
    start = f"{output}/" if output else ""
    if "predicted_class" in fields:
        classification: dict[str, Any] = {name: fields[name] for name in CLASSIFICATION_OUTPUTS}
        if "abstain" in fields:
            classification |= {"abstain": fields["abstain"], "abstain_score": fields["abstain_score"],
                               "abstain_score_name": echoed.get(start + "abstain_score"),
                               "abstain_threshold": echoed.get(start + "abstain_threshold")}  # fmt: skip
        return Prediction(**classification, **common)
    epistemic_only = echoed.get(start + "epistemic_only", True)
    noise = None
    if not epistemic_only:
        predictive = fields["predictive_std"].astype(np.float64)
        noise = np.mean(np.square(predictive) - np.square(fields["std"].astype(np.float64)), axis=0)
    regression: dict[str, Any] = {name: fields[name] for name in REGRESSION_OUTPUTS}
    return Prediction(**regression, noise_variance=noise, interval=interval,
                      interval_calibration=echoed.get(start + "interval_calibration"), **common)  # fmt: skip
