"""Bad requests get the right status code and a message saying what was expected; the server keeps serving."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.client import Client, RpcFailed
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.protocols import tensors as codec
from mcdrop.serving.runtime.dataplane import PredictionRequest
from mcdrop.serving.server.server import Server
from tests.helpers import in_process_server

SERVER_SETTINGS = {"max_samples": 500, "max_batch": 16, "max_sample_rows": 2000}


def raw_predict(server: Server, request: pb.PredictRequest) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return pb_grpc.InferenceStub(channel).Predict(request, timeout=10)


def expect(code: str, message: str, call: Any) -> None:
    with pytest.raises(RpcFailed) as info:
        call()
    assert info.value.code == code, info.value
    assert message in info.value.message, info.value.message
    assert "Traceback" not in info.value.message


GOOD = np.zeros((2, 64), np.float32)


@pytest.mark.parametrize(
    ("code", "message", "kwargs"),
    [
        ("NOT_FOUND", "Model 'nope' is not loaded. Loaded models: diabetes, digits", {"model": "nope"}),
        ("NOT_FOUND", "Version 9 of model 'digits' is not loaded. Loaded versions: 1", {"version": 9}),
        ("INVALID_ARGUMENT", "Input value 1e+300 at index [1, 2] is outside the float32 range", {"huge_at": (1, 2)}),
        ("INVALID_ARGUMENT", "Expected [B, 64]. Received: [2, 63]", {"x": np.zeros((2, 63), np.float32)}),
        ("INVALID_ARGUMENT", "Expected [B, 64]. Received: [64]", {"x": np.zeros(64, np.float32)}),
        ("INVALID_ARGUMENT", "Expected 1 <= B <= 16. Received: 17", {"x": np.zeros((17, 64), np.float32)}),
        ("INVALID_ARGUMENT", "Expected 1 <= B <= 16. Received: 0", {"x": np.zeros((0, 64), np.float32)}),
        ("INVALID_ARGUMENT", "1 NaN/Inf value(s), first at index [1, 5]", {"nan_at": (1, 5)}),
        ("INVALID_ARGUMENT", "1 NaN/Inf value(s), first at index [0, 0]", {"inf_at": (0, 0)}),
        ("INVALID_ARGUMENT", "Expected 1 <= T <= 500. Received: 501", {"samples": 501}),
        ("INVALID_ARGUMENT", "T x batch = 200 x 16 = 3200. Expected at most 2000", {"samples": 200, "rows": 16}),
        ("INVALID_ARGUMENT", "Expected a level in (0, 1). Received: 1.5", {"interval": 1.5}),
        ("INVALID_ARGUMENT", "Expected a positive finite number. Received: -1.0", {"tolerance": -1.0}),
    ],
)
def test_bad_request(served: tuple[Server, Client], code: str, message: str, kwargs: dict[str, Any]) -> None:
    _, client = served
    x = kwargs.pop("x", GOOD.copy())
    if "rows" in kwargs:
        x = np.zeros((kwargs.pop("rows"), 64), np.float32)
    if "huge_at" in kwargs:
        x = x.astype(np.float64)
        x[kwargs.pop("huge_at")] = 1e300
    for key, value in (("nan_at", np.nan), ("inf_at", np.inf)):
        if key in kwargs:
            x = x.copy()
            x[kwargs.pop(key)] = value
    model = kwargs.pop("model", "digits")
    expect(code, message, lambda: client.predict(model, x, **kwargs))
    assert client.predict("digits", GOOD, samples=10).samples == 10  # still serving


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64, np.uint8])
def test_numeric_inputs_are_converted_to_the_model_dtype_as_the_proto_says(
    served: tuple[Server, Client], digits_rows: np.ndarray, dtype: type
) -> None:
    _, client = served
    x = digits_rows[:3].astype(dtype)  # digits pixels are small integers: exact in every type
    converted = client.predict("digits", x, samples=20, seed=4)
    reference = client.predict("digits", x.astype(np.float32), samples=20, seed=4)
    np.testing.assert_array_equal(converted.mean, reference.mean)
    np.testing.assert_array_equal(converted.mutual_information, reference.mutual_information)


def test_wrong_byte_length_and_dtype_enum(served: tuple[Server, Client]) -> None:
    server, client = served
    tensor = codec.encode(GOOD)
    short = pb.Tensor(shape=tensor.shape, dtype=tensor.dtype, data=tensor.data[:-4])
    expect(
        "INVALID_ARGUMENT",
        "Expected 512 bytes (shape [2, 64] x 4 bytes of FLOAT32). Received: 508 bytes",
        lambda: _raise_rpc(lambda: raw_predict(server, pb.PredictRequest(model="digits", input=short))),
    )
    unspecified = pb.Tensor(shape=[2, 64], data=tensor.data)
    expect(
        "INVALID_ARGUMENT",
        "Received: DATA_TYPE_UNSPECIFIED",
        lambda: _raise_rpc(lambda: raw_predict(server, pb.PredictRequest(model="digits", input=unspecified))),
    )
    assert client.health() == "SERVING"


def test_monte_carlo_on_a_model_without_dropout_is_refused(model_repository: Path, tmp_path: Path) -> None:
    import keras

    from mcdrop.pipeline.export.exporter import ExportOptions, export

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "plain.keras")
    export(ExportOptions(model_path=tmp_path / "plain.keras", repository=tmp_path / "repo", name="plain"))
    with in_process_server(tmp_path / "repo") as (_, client):
        assert client.predict("plain", GOOD).mode == "deterministic"  # the default for such a model
        expect("INVALID_ARGUMENT", "has no dropout layers", lambda: client.predict("plain", GOOD, mode="monte_carlo"))


def test_negative_values_are_refused_by_the_data_plane(served: tuple[Server, Client]) -> None:
    """The mcdrop API's unsigned fields cannot carry them, but other transports can."""
    server, _ = served
    for field, value, message in (("samples", -1, "Received: -1"), ("seed", -5, "Invalid seed")):
        request = PredictionRequest(model="digits", x=GOOD, **{field: value})
        with pytest.raises(InvalidArgument, match=message):
            server.plane.predict(request)


def test_overload_returns_resource_exhausted(model_repository: Path) -> None:
    with in_process_server(model_repository, pool_size=1, max_queue=0, grpc_threads=8) as (_, client):
        heavy = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
        codes: list[str] = []
        lock = threading.Lock()

        def call() -> None:
            try:
                client.predict("digits", heavy, samples=4000, seed=1)
                outcome = "OK"
            except RpcFailed as exc:
                outcome = exc.code
            with lock:
                codes.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
        assert client.predict("digits", GOOD, samples=10).samples == 10


def test_deadline_is_honoured(served: tuple[Server, Client]) -> None:
    _, client = served
    x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    expect("DEADLINE_EXCEEDED", "", lambda: client.predict("digits", x, samples=125, tolerance=1e-12,
                                                           max_samples=500, chunk=1, timeout=0.005))  # fmt: skip
    assert client.predict("digits", GOOD, samples=10).samples == 10


def test_internal_errors_return_a_generic_message(
    served: tuple[Server, Client], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server, client = served

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail: /etc/passwd")

    monkeypatch.setattr(server.plane.sampler, "_one_shot", broken)
    with pytest.raises(RpcFailed) as info:
        client.predict("digits", GOOD, samples=10)
    assert info.value.code == "INTERNAL"
    assert "incident" in info.value.message and "secret" not in info.value.message
    assert any("secret detail" in str(r.exc_info) for r in caplog.records)
    monkeypatch.undo()
    assert client.predict("digits", GOOD, samples=10).samples == 10


def _raise_rpc(call: Any) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        raise RpcFailed(exc.code().name, exc.details() or "") from None
