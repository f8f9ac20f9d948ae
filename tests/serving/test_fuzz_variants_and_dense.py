"""Fuzzing what M4 added to requests — variants, abstention, dense (per-pixel) outputs — on every transport.

One server holds ``digits`` exported with variants (dynamic-int8, int8, int8-io; calibrated) and the ``unet``
U-Net (version 2 calibrated per pixel). Hypothesis sends each transport requests for either model with inputs of
either model's shape, any variant name, abstain parameters, modes, T, seeds and ``return_samples``: every answer is
a success or a status that blames the request, never an internal error or a traceback; the server stays healthy
and answers both models correctly afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.harness.process import free_port
from tests.helpers import in_process_server

EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])  # fmt: skip
ALLOWED_GRPC = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip
ROW_SHAPES = {"digits": (64,), "unet": (32, 32, 3)}
VARIANTS = ["", "float32", "dynamic-int8", "int8", "int8-io", "float16", "INT8", "bogus"]
SCORES = ["", "mutual_information", "predictive_entropy", "least_confidence", "deterministic_least_confidence", "x"]
finite_or_not = st.one_of(st.floats(-1, 3), st.sampled_from([float("nan"), float("inf"), -1e30, 0.0]))


@pytest.fixture(scope="module")
def server(variant_repository: Path, dense_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    repo = tmp_path_factory.mktemp("fuzz-m4") / "repo"
    shutil.copytree(variant_repository / "digits", repo / "digits")
    shutil.copytree(dense_repository / "unet", repo / "unet")
    limits = {"max_samples": 200, "max_batch": 8, "max_sample_rows": 800, "max_request_gflops": 2.0}
    with in_process_server(repo, http_port=free_port(), **limits) as (srv, client):
        yield srv, client


def _mostly(draw: Any, good: Any, bad: Any) -> Any:
    """Nine draws in ten from ``good``: most requests must get far enough to exercise what answers them."""
    return draw(good if draw(st.integers(0, 9)) else bad)


@st.composite
def cases(draw: Any) -> dict[str, Any]:
    """A request for either model, with an input of its shape (or the other model's, or a bad one), and M4's
    parameters — mostly in range, sometimes not."""
    model = _mostly(draw, st.sampled_from(["digits", "unet"]), st.sampled_from(["nope", ""]))
    shape_of = _mostly(draw, st.just(model if model in ROW_SHAPES else "digits"), st.sampled_from(["digits", "unet"]))
    rows = _mostly(draw, st.integers(1, 3), st.just(0))
    shape = (rows, *ROW_SHAPES[shape_of]) if draw(st.integers(0, 19)) else (rows, 7)
    values = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(0, 1, shape).astype(np.float32)
    if values.size and not draw(st.integers(0, 9)):
        values.reshape(-1)[0] = draw(st.sampled_from([float("nan"), float("inf")]))
    parameters: dict[str, Any] = {}
    for key, good, bad in (
        ("variant", st.sampled_from(VARIANTS[:5]), st.sampled_from(VARIANTS[5:])),
        ("abstain_threshold", st.floats(0, 2), finite_or_not),
        ("abstain_score", st.sampled_from(SCORES[:5]), st.sampled_from(SCORES[5:])),
        ("mode", st.sampled_from(["monte_carlo", "deterministic"]), st.sampled_from(["moments", "other"])),
        ("mc_samples", st.integers(1, 60), st.integers(-1, 250)),
        ("seed", st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)),
        ("return_samples", st.booleans(), st.booleans()),
        ("version", st.sampled_from([1, 2]), st.just(3)),
    ):
        if not draw(st.integers(0, 2)):  # each parameter in a third of the requests
            parameters[key] = _mostly(draw, good, bad)
    return {"model": model, "x": values, "parameters": parameters}


def _mcdrop_v1(case: dict[str, Any]) -> pb.PredictRequest:
    p, x = case["parameters"], case["x"]
    request = pb.PredictRequest(model=case["model"], input=pb.Tensor(shape=list(x.shape), dtype=pb.FLOAT32,
                                                                     data=x.tobytes()))  # fmt: skip
    modes = {"monte_carlo": pb.MONTE_CARLO, "deterministic": pb.DETERMINISTIC, "moments": pb.MOMENTS, "other": 9}
    request.mode = modes.get(p.get("mode", ""), pb.MODE_UNSPECIFIED)
    request.samples = max(0, p.get("mc_samples", 0))
    request.return_samples = p.get("return_samples", False)
    request.variant = p.get("variant", "")
    request.abstain_score = p.get("abstain_score", "")
    for name in ("seed", "version", "abstain_threshold"):
        if name in p:
            setattr(request, name, p[name])
    return request


def _oip_parameters(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in case["parameters"].items() if k != "version"}


def _oip_grpc(case: dict[str, Any]) -> oip.ModelInferRequest:
    x = case["x"]
    request = oip.ModelInferRequest(model_name=case["model"], model_version=str(case["parameters"].get("version", "")))
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    for key, value in _oip_parameters(case).items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        elif isinstance(value, float):
            request.parameters[key].double_param = value
        else:
            request.parameters[key].string_param = value
    return request


def _check_grpc(call: Any) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED_GRPC, (exc.code(), exc.details())
        assert "Traceback" not in (exc.details() or "") and "incident" not in (exc.details() or ""), exc.details()
        return str(exc.code().name)


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def test_fuzz_every_transport_with_variants_abstention_and_dense_outputs(server: Any) -> None:
    srv, client = server
    seen: dict[str, dict[str, int]] = {"mcdrop.v1": {}, "oip-grpc": {}, "oip-rest": {}, "tfserving-rest": {}}
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    mcdrop_stub, oip_stub = pb_grpc.InferenceStub(channel), oip_grpc.GRPCInferenceServiceStub(channel)
    http = httpx.Client(base_url=f"http://127.0.0.1:{srv.http_port}", timeout=60)

    def count(transport: str, outcome: str) -> None:
        seen[transport][outcome] = seen[transport].get(outcome, 0) + 1

    @FUZZ
    @given(case=cases())
    def check(case: dict[str, Any]) -> None:
        count("mcdrop.v1", _check_grpc(lambda: mcdrop_stub.Predict(_mcdrop_v1(case), timeout=30)))
        count("oip-grpc", _check_grpc(lambda: oip_stub.ModelInfer(_oip_grpc(case), timeout=30)))
        x, parameters = case["x"], {k: _json_safe(v) for k, v in _oip_parameters(case).items()}
        version = case["parameters"].get("version")
        base = f"/v2/models/{case['model']}" + (f"/versions/{version}" if version else "")
        data = [_json_safe(float(v)) for v in x.reshape(-1)]
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": data}],
                "parameters": parameters}  # fmt: skip
        answer = http.post(f"{base}/infer", json=body)
        assert answer.status_code in (200, 400, 404, 405, 413), answer.text
        assert answer.status_code == 200 or isinstance(answer.json()["error"], str)
        count("oip-rest", str(answer.status_code))
        rows = np.where(np.isfinite(x), x, np.nan).astype(object)
        rows[~np.isfinite(x)] = None  # JSON has no NaN: a null the server must refuse
        tf_body = {"inputs": {"x": rows.tolist(), **{k: v for k, v in parameters.items() if v is not None}}}
        tf_base = f"/v1/models/{case['model']}" + (f"/versions/{version}" if version else "")
        tf_answer = http.post(f"{tf_base}:predict", content=_dumps(tf_body))
        assert tf_answer.status_code in (200, 400, 404, 405, 413), tf_answer.text
        assert tf_answer.status_code == 200 or isinstance(tf_answer.json()["error"], str)
        count("tfserving-rest", str(tf_answer.status_code))

    check()
    channel.close()
    http.close()
    print(f"\nM4 fuzz, {EXAMPLES} cases per transport: {seen}")
    for transport, outcomes in seen.items():
        assert sum(outcomes.values()) >= EXAMPLES, transport
        assert outcomes.get("OK", outcomes.get("200", 0)) > 0, (transport, outcomes)  # answers as well as refusals
        assert len(outcomes) > 1, (transport, outcomes)
    assert client.health() == "SERVING"
    dense = client.predict("unet", np.zeros((1, 32, 32, 3), np.float32), samples=10, seed=1)
    assert dense.mutual_information.shape == (1, 32, 32) and dense.abstain.shape == (1, 32, 32)
    int8 = client.predict("digits", np.zeros((1, 64), np.float32), samples=10, seed=1, variant="int8")
    assert int8.variant == "int8" and int8.mean.shape == (1, 10)


def _dumps(body: Any) -> bytes:
    import json

    return json.dumps(body, allow_nan=False).encode()
