"""Property-based fuzzing of both APIs over real loopback gRPC: every reply is a proper status, never a crash.

Hypothesis throws random requests (shapes, dtypes, byte lengths, NaN/Inf, huge/zero/negative T and seeds,
unknown models and versions, wrong parameter types) at the mcdrop API and the Open Inference Protocol.
Each reply must be OK or a status that blames the request, with no traceback in its message; the
server must still be healthy and answer correctly afterwards. The number of cases run is printed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.client import Client
from tests.helpers import in_process_server

EXAMPLES = 400
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # reproducible in CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def server(calibrated_repository: Path) -> Iterator[tuple[str, Client]]:
    """Version 1 of each model uncalibrated, version 2 calibrated (abstain and conformal intervals)."""
    limits = {"max_samples": 2000, "max_batch": 64, "max_sample_rows": 20000, "max_request_gflops": 1.0}
    with in_process_server(calibrated_repository, **limits) as (srv, client):
        yield f"127.0.0.1:{srv.port}", client


def floats32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


special = st.sampled_from([0.0, 1.0, -1.0, 16.0, float("nan"), float("inf"), float("-inf"), 1e38, -1e38])
any_float = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True), special)
shapes = st.one_of(
    st.sampled_from([[1, 64], [3, 64], [2, 10], [1, 63], [64], [0, 64], [65, 64], [1, 8, 8], [2**31, 64]]),
    st.lists(st.integers(-3, 2**40), min_size=0, max_size=10),
)


@st.composite
def tensors(draw: Any) -> pb.Tensor:
    shape = draw(shapes)
    dtype = draw(st.integers(0, 7))
    count = int(np.prod([d for d in shape if 0 <= d < 10_000] or [0]))
    if dtype == pb.FLOAT32 and 0 < count <= 4096 and draw(st.booleans()):
        data = floats32(draw(st.lists(any_float, min_size=count, max_size=count)))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]  # short buffer
    else:
        data = draw(st.binary(max_size=1024))
    return pb.Tensor(shape=[max(-(2**62), min(d, 2**62)) for d in shape], dtype=dtype, data=data)


@st.composite
def valid_tensors(draw: Any) -> tuple[str, pb.Tensor]:
    """A well-formed input for one of the two models (values may still be NaN/Inf)."""
    model, width = draw(st.sampled_from([("digits", 64), ("diabetes", 10)]))
    rows = draw(st.integers(1, 4))
    values = draw(st.lists(st.floats(-20, 20, width=32) | special, min_size=rows * width, max_size=rows * width))
    return model, pb.Tensor(shape=[rows, width], dtype=pb.FLOAT32, data=floats32(values))


@st.composite
def predict_requests(draw: Any) -> pb.PredictRequest:
    valid = draw(st.booleans())
    if valid:
        model, tensor = draw(valid_tensors())
    else:
        model = draw(st.one_of(st.sampled_from(["digits", "diabetes", "", "nope"]), st.text(max_size=12)))
        tensor = draw(tensors())
    request = pb.PredictRequest(
        model=model,
        input=tensor,
        mode=draw(st.integers(0, 2) if valid else st.integers(0, 2**31 - 1)),
        samples=draw(st.integers(0, 300) if valid else st.integers(0, 2**32 - 1)),
        return_samples=draw(st.booleans()),
        max_samples=draw(st.integers(0, 300) if valid else st.integers(0, 2**32 - 1)),
        chunk=draw(st.integers(0, 50) if valid else st.integers(0, 2**32 - 1)),
    )
    for name, strategy in (
        ("version", st.sampled_from([1, 2]) if valid else st.integers(-(2**63), 2**63 - 1)),
        ("abstain_threshold", st.one_of(st.floats(0, 2), any_float)),
        ("seed", st.integers(0, 2**64 - 1)),
        ("interval", st.one_of(st.floats(0.01, 0.99), any_float)),
        ("tolerance", st.one_of(st.floats(0.01, 0.5), any_float)),
    ):
        value = draw(st.none() | strategy)
        if value is not None:
            setattr(request, name, value)
    request.abstain_score = draw(st.sampled_from(SCORES) | st.text(max_size=8))
    return request


SCORES = ["", "mutual_information", "predictive_entropy", "variation_ratio", "least_confidence",
          "deterministic_least_confidence", "bogus"]  # fmt: skip


parameter_values = st.one_of(
    st.booleans().map(lambda v: oip.InferParameter(bool_param=v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: oip.InferParameter(int64_param=v)),
    st.text(max_size=12).map(lambda v: oip.InferParameter(string_param=v)),
    st.sampled_from(["monte_carlo", "deterministic", "MONTE_CARLO"]).map(lambda v: oip.InferParameter(string_param=v)),
    any_float.map(lambda v: oip.InferParameter(double_param=v)),
    st.integers(0, 2**64 - 1).map(lambda v: oip.InferParameter(uint64_param=v)),
)


typed_parameters = {
    "mc_samples": st.integers(-5, 300).map(lambda v: oip.InferParameter(int64_param=v)),
    "seed": st.integers(-5, 2**63 - 1).map(lambda v: oip.InferParameter(int64_param=v)),
    "mode": st.sampled_from(["monte_carlo", "deterministic"]).map(lambda v: oip.InferParameter(string_param=v)),
    "return_samples": st.booleans().map(lambda v: oip.InferParameter(bool_param=v)),
    "interval": st.floats(0.01, 0.99).map(lambda v: oip.InferParameter(double_param=v)),
    "abstain_threshold": st.one_of(st.floats(0, 2), any_float).map(lambda v: oip.InferParameter(double_param=v)),
    "abstain_score": st.sampled_from(SCORES).map(lambda v: oip.InferParameter(string_param=v)),
}


@st.composite
def valid_infer_requests(draw: Any) -> oip.ModelInferRequest:
    """A well-formed request (values may be NaN/Inf, parameters in range or just outside it)."""
    model, tensor = draw(valid_tensors())
    request = oip.ModelInferRequest(model_name=model, model_version=draw(st.sampled_from(["", "1", "2"])))
    request.inputs.add(name="x", datatype="FP32", shape=list(tensor.shape))
    request.raw_input_contents.append(tensor.data)
    for key in draw(st.lists(st.sampled_from(sorted(typed_parameters)), max_size=4, unique=True)):
        request.parameters[key].CopyFrom(draw(typed_parameters[key]))
    return request


@st.composite
def infer_requests(draw: Any) -> oip.ModelInferRequest:
    if draw(st.booleans()):
        return draw(valid_infer_requests())
    request = oip.ModelInferRequest(
        model_name=draw(st.one_of(st.sampled_from(["digits", "diabetes", "nope"]), st.text(max_size=12))),
        model_version=draw(st.one_of(st.sampled_from(["", "1", "2", "0", "-1", "abc"]), st.text(max_size=5))),
        id=draw(st.text(max_size=8)),
    )
    for _ in range(draw(st.integers(0, 2))):
        shape = draw(shapes)
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["x", "y", ""])),
            datatype=draw(st.sampled_from(["FP32", "FP64", "INT64", "UINT8", "BOOL", "BYTES", "FLOAT", "", "FP16"])),
            shape=[max(-(2**62), min(d, 2**62)) for d in shape],
        )
        if draw(st.booleans()):
            tensor.contents.fp32_contents.extend(draw(st.lists(any_float, max_size=200)))
    for _ in range(draw(st.integers(0, 2))):
        request.raw_input_contents.append(draw(st.binary(max_size=1024)))
    if request.inputs and draw(st.booleans()) and list(request.inputs[0].shape) in ([1, 64], [2, 64], [2, 10]):
        shape = list(request.inputs[0].shape)
        del request.raw_input_contents[:]
        request.raw_input_contents.append(
            floats32(draw(st.lists(any_float, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
        )
    for key in draw(
        st.lists(
            st.sampled_from(
                [
                    "mc_samples",
                    "seed",
                    "mode",
                    "return_samples",
                    "interval",
                    "priority",
                    "bogus",
                    "abstain_threshold",
                    "abstain_score",
                ]
            ),
            max_size=4,
            unique=True,
        )
    ):
        request.parameters[key].CopyFrom(draw(parameter_values))
    for name in draw(
        st.lists(st.sampled_from(["mean", "std", "samples", "lower", "logits", "abstain", "abstain_score"]), max_size=3)
    ):
        request.outputs.add(name=name)
    return request


def check_reply(call: Any) -> grpc.StatusCode:
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
        details = exc.details() or ""
        assert code in ALLOWED, (code, details)
        assert "Traceback" not in details and 'File "' not in details, details
        return code


def test_fuzz_mcdrop_api(server: tuple[str, Client]) -> None:
    address, client = server
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.InferenceStub(channel)
    seen: dict[str, int] = {}

    @FUZZ_SETTINGS
    @given(request=predict_requests(), stream=st.booleans())
    def check(request: pb.PredictRequest, stream: bool) -> None:
        method = stub.PredictStream if stream else stub.Predict
        code = check_reply(lambda: method(request, timeout=10))
        seen[code.name] = seen.get(code.name, 0) + 1

    check()
    channel.close()
    print(f"\nmcdrop.v1 fuzz: {sum(seen.values())} cases, status counts {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES
    assert seen.get("OK", 0) > 0 and seen.get("INVALID_ARGUMENT", 0) > 0  # both paths were exercised
    assert client.health() == "SERVING"
    assert client.predict("digits", np.zeros((1, 64), np.float32), samples=20, seed=1).samples == 20


def test_fuzz_open_inference_protocol(server: tuple[str, Client]) -> None:
    address, client = server
    channel = grpc.insecure_channel(address)
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    seen: dict[str, int] = {}

    @FUZZ_SETTINGS
    @given(request=infer_requests())
    def check(request: oip.ModelInferRequest) -> None:
        code = check_reply(lambda: stub.ModelInfer(request, timeout=10))
        seen[code.name] = seen.get(code.name, 0) + 1

    check()
    channel.close()
    print(f"\nOpen Inference Protocol fuzz: {sum(seen.values())} cases, status counts {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= EXAMPLES
    assert seen.get("OK", 0) > 0 and seen.get("INVALID_ARGUMENT", 0) > 0
    assert client.health() == "SERVING"


def test_garbage_bytes_are_refused_without_harm(server: tuple[str, Client]) -> None:
    address, client = server
    with grpc.insecure_channel(address) as channel:
        raw = channel.unary_unary("/mcdrop.v1.Inference/Predict")
        for garbage in (b"\xff" * 7, b"\x0a\xff\xff\xff\xff\x0f", bytes(range(256))):
            with pytest.raises(grpc.RpcError) as info:
                raw(garbage, timeout=5)
            assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
            assert "Traceback" not in (info.value.details() or "")
    assert client.health() == "SERVING"
