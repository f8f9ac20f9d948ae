"""Open Inference Protocol details the Triton client does not exercise: typed contents, output selection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc
from mcdrop.serving.client import Client
from mcdrop.serving.server.server import Server
from tests.helpers import in_process_server


@pytest.fixture(scope="module")
def stub(model_repository: Path) -> Iterator[tuple[Any, Client]]:
    with (
        in_process_server(model_repository) as (server, client),
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield oip_grpc.GRPCInferenceServiceStub(channel), client


def request(x: np.ndarray, *, raw: bool = True, model: str = "digits", **parameters: Any) -> Any:
    message = oip.ModelInferRequest(model_name=model, id="req-1")
    tensor = message.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    if raw:
        message.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    for name, value in parameters.items():
        field = {bool: "bool_param", int: "int64_param", str: "string_param", float: "double_param"}[type(value)]
        setattr(message.parameters[name], field, value)
    return message


def output(response: Any, name: str) -> np.ndarray:
    index = [o.name for o in response.outputs].index(name)
    spec = response.outputs[index]
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}[spec.datatype]
    return np.frombuffer(response.raw_output_contents[index], dtype=dtype).reshape(list(spec.shape))


def test_typed_contents_equal_raw_contents(stub: tuple[Any, Client], digits_rows: np.ndarray) -> None:
    service, client = stub
    raw = service.ModelInfer(request(digits_rows[:3], mc_samples=40, seed=9), timeout=10)
    typed = service.ModelInfer(request(digits_rows[:3], raw=False, mc_samples=40, seed=9), timeout=10)
    assert raw.id == "req-1" and raw.model_version == "1"
    assert output(raw, "mean").tobytes() == output(typed, "mean").tobytes()
    native = client.predict("digits", digits_rows[:3], samples=40, seed=9)
    assert output(raw, "mean").tobytes() == native.mean.tobytes()
    assert not any(o.contents.ListFields() for o in raw.outputs)  # data only in raw_output_contents


def test_requested_outputs_in_order_and_regression(stub: tuple[Any, Client]) -> None:
    service, _ = stub
    message = request(np.zeros((2, 10), np.float32), model="diabetes", mc_samples=30, seed=1, interval=0.8)
    message.outputs.add(name="upper")
    message.outputs.add(name="lower")
    response = service.ModelInfer(message, timeout=10)
    assert [o.name for o in response.outputs] == ["upper", "lower"]
    assert (output(response, "lower") < output(response, "upper")).all()
    assert response.parameters["epistemic_only"].bool_param is False


def test_regression_outputs_are_the_native_apis_bit_for_bit(stub: tuple[Any, Client]) -> None:
    service, client = stub
    x = np.linspace(-0.1, 0.1, 20, dtype=np.float32).reshape(2, 10)
    response = service.ModelInfer(request(x, model="diabetes", mc_samples=40, seed=4, interval=0.8), timeout=10)
    native = client.predict("diabetes", x, samples=40, seed=4, interval=0.8)
    names = ["mean", "std", "predictive_std", "lower", "upper", "mean_lower", "mean_upper"]
    assert [o.name for o in response.outputs] == names  # samples only when asked for
    for name in names:
        assert output(response, name).tobytes() == getattr(native, name).tobytes(), name
    assert (native.predictive_std > native.std).all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: setattr(m.parameters["temperature"], "double_param", 0.5), "Unknown parameter 'temperature'"),
        (lambda m: m.inputs[0].contents.fp32_contents.append(1.0), "both raw_input_contents and typed contents"),
        (lambda m: setattr(m.inputs[0], "datatype", "FLOAT"), "Invalid datatype 'FLOAT'"),
        (lambda m: m.raw_input_contents.append(b""), "Expected 1, one per input"),
        (lambda m: m.outputs.add(name="logits"), "Unknown output(s) ['logits']"),
        (lambda m: setattr(m, "model_version", "abc"), "Invalid model version 'abc'"),
        (lambda m: setattr(m.parameters["mode"], "string_param", "greedy"), "Expected 'deterministic', 'monte_c"),
    ],
)
def test_strict_checks(stub: tuple[Any, Client], mutate: Any, message: str) -> None:
    service, _ = stub
    bad = request(np.zeros((1, 64), np.float32))
    mutate(bad)
    with pytest.raises(grpc.RpcError) as info:
        service.ModelInfer(bad, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


def test_readiness_follows_the_server_lifecycle(model_repository: Path) -> None:
    with in_process_server(model_repository) as (server, _):
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        service = oip_grpc.GRPCInferenceServiceStub(channel)
        assert service.ServerReady(oip.ServerReadyRequest(), timeout=5).ready is True
        assert service.ModelReady(oip.ModelReadyRequest(name="digits", version="1"), timeout=5).ready is True
        assert service.ModelReady(oip.ModelReadyRequest(name="digits", version="7"), timeout=5).ready is False
        assert isinstance(server, Server) and server.ready()
        channel.close()
    assert not server.ready()


def test_every_advertised_output_can_be_requested_by_name(stub: tuple[Any, Client], digits_rows: np.ndarray) -> None:
    oip_stub, client = stub
    metadata = oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="digits"), timeout=10)
    advertised = [o.name for o in metadata.outputs]
    assert "samples" in advertised
    for name in advertised:
        message = request(digits_rows[:2], mc_samples=20, seed=3)  # no return_samples parameter
        message.outputs.add(name=name)
        response = oip_stub.ModelInfer(message, timeout=30)
        assert [o.name for o in response.outputs] == [name]
        if name == "samples":
            samples = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(response.outputs[0].shape))
            assert samples.shape == (20, 2, 10)
            expected = client.predict("digits", digits_rows[:2], samples=20, seed=3, return_samples=True)
            np.testing.assert_array_equal(samples, expected.sample_outputs)


def test_mc_samples_zero_and_a_bad_mode_are_refused_by_the_data_plane(
    stub: tuple[Any, Client], digits_rows: np.ndarray
) -> None:
    oip_stub, _ = stub
    for parameters, message in (
        ({"mc_samples": 0}, "Invalid samples. Expected 1 <= T <= 10000. Received: 0"),
        ({"mode": "bayesian"}, "Invalid mode 'bayesian'. Expected 'deterministic', 'monte_carlo' or 'moments'."),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            oip_stub.ModelInfer(request(digits_rows[:1], **parameters), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == message
    upper = oip_stub.ModelInfer(request(digits_rows[:1], mode="DETERMINISTIC"), timeout=10)
    assert upper.parameters["mode"].string_param == "deterministic"
