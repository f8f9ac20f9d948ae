"""The Open Inference Protocol over REST: the same answers as gRPC, JSON errors with the right status, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcdrop.serving.client import Client
from mcdrop.serving.harness.process import free_port
from mcdrop.serving.server.server import Server
from tests.helpers import in_process_server


@pytest.fixture(scope="module")
def rest(model_repository: Path) -> Iterator[tuple[Server, Client, httpx.Client]]:
    with in_process_server(model_repository, http_port=free_port(), max_message_bytes=200_000) as (server, client):
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30)
        try:
            yield server, client, http
        finally:
            http.close()


def infer_body(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
    return {"id": "r1", "inputs": [tensor], "parameters": parameters}


def outputs(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    kinds = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}
    return {o["name"]: np.asarray(o["data"], kinds[o["datatype"]]).reshape(o["shape"]) for o in answer["outputs"]}


def test_health_and_metadata(rest: tuple[Server, Client, httpx.Client]) -> None:
    _, _, http = rest
    assert http.get("/v2").json() == {"name": "mcdrop", "version": http.get("/v2").json()["version"],
                                      "extensions": ["mc_dropout"]}  # fmt: skip
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").json() == {"ready": True}
    for path in ("/v2/models/digits", "/v2/models/digits/versions/1"):
        metadata = http.get(path).json()
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
        assert [o["name"] for o in metadata["outputs"]][:3] == ["mean", "std", "predicted_class"]
    assert http.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert http.get("/v2/models/nothing/ready").status_code == 404


@pytest.mark.parametrize("model", ["digits", "diabetes"])
def test_seeded_rest_answers_equal_grpc_bit_for_bit(
    rest: tuple[Server, Client, httpx.Client], model: str, digits_rows: np.ndarray
) -> None:
    _, client, http = rest
    x = digits_rows[:3] if model == "digits" else np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    answer = http.post(f"/v2/models/{model}/infer", json=infer_body(x, mc_samples=64, seed=9)).json()
    assert answer["id"] == "r1" and answer["parameters"]["seed"] == 9 and answer["parameters"]["mc_samples"] == 64
    got = outputs(answer)
    grpc_answer = client.predict(model, x, samples=64, seed=9)
    assert got["mean"].tobytes() == grpc_answer.mean.astype(np.float32).tobytes()
    assert got["std"].tobytes() == grpc_answer.std.astype(np.float32).tobytes()
    if model == "digits":
        assert got["predicted_class"].tolist() == grpc_answer.predicted_class.tolist()
        assert got["mutual_information"].tobytes() == grpc_answer.mutual_information.astype(np.float64).tobytes()
    else:
        assert got["lower"].tobytes() == grpc_answer.lower.astype(np.float32).tobytes()


def test_tritonclient_http_reads_the_same_numbers(
    rest: tuple[Server, Client, httpx.Client], digits_rows: np.ndarray
) -> None:
    import tritonclient.http as triton

    server, _, http = rest
    triton_client = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits")
    tensor = triton.InferInput("x", list(digits_rows[:2].shape), "FP32")
    tensor.set_data_from_numpy(digits_rows[:2], binary_data=False)
    wanted = [triton.InferRequestedOutput(name, binary_data=False) for name in ("mean", "mutual_information")]
    result = triton_client.infer("digits", [tensor], outputs=wanted, parameters={"mc_samples": 32, "seed": 4})
    plain = outputs(
        http.post("/v2/models/digits/infer", json=infer_body(digits_rows[:2], mc_samples=32, seed=4)).json()
    )
    assert result.as_numpy("mean").tobytes() == plain["mean"].tobytes()
    assert result.as_numpy("mutual_information").tobytes() == plain["mutual_information"].tobytes()


def x_tensor(datatype: str = "FP32", shape: list[int] | None = None, data: list[Any] | None = None) -> Any:
    return {"name": "x", "datatype": datatype, "shape": shape or [1, 64], "data": [0] * 64 if data is None else data}


INFER = "/v2/models/digits/infer"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (INFER, b"{not json", 400, "Invalid JSON body"),
        (INFER, {"inputs": []}, 400, "takes 1 input named 'x'"),
        (INFER, {"inputs": [x_tensor(shape=[1, 3], data=[1, 2, 3])]}, 400, "Expected [-1, 64]"),
        (INFER, {"inputs": [x_tensor("INT32")]}, 400, "Expected FP32"),
        (INFER, {"inputs": [x_tensor(data=[0] * 63)]}, 400, "Expected 64 values"),
        (INFER, {"inputs": [x_tensor(data=["a"] * 64)]}, 400, "Expected numbers"),
        (INFER, {"inputs": [x_tensor(data=[10**400] * 64)]}, 400, "beyond the float range"),
        (INFER, {"inputs": [x_tensor(data=[True] * 64)]}, 400, "Expected numbers"),
        (INFER, {"inputs": [x_tensor()], "parameters": {"mc_samples": "ten"}}, 400, "parameter 'mc_samples'"),
        (INFER, {"inputs": [x_tensor()], "parameters": {"turbo": True}}, 400, "Unknown parameter 'turbo'"),
        (INFER, {"inputs": [x_tensor()], "parameters": {"mc_samples": 0}}, 400, "Expected 1 <= T"),
        ("/v2/models/nothing/infer", {"inputs": []}, 404, "nothing"),
        ("/v2/models/digits/versions/7/infer", {"inputs": []}, 404, "Version 7 of model"),
        ("/v2/models/digits/versions/x/infer", {"inputs": []}, 400, "Invalid model version"),
        (INFER, b"[" + b"0," * 150_000 + b"0]", 413, "Expected at most 200000 bytes"),
    ],
)
def test_bad_requests_get_json_errors_with_the_right_status(
    rest: tuple[Server, Client, httpx.Client], path: str, body: Any, status: int, message: str
) -> None:
    _, _, http = rest
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = http.post(path, content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert http.get("/v2/health/ready").status_code == 200


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**1100), 2**1100)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "y"]), "datatype": st.sampled_from(["FP32", "FP64", "BYTES"]),
     "shape": st.lists(st.integers(-2, 70), max_size=3), "data": st.lists(FLOATS, max_size=70)},
)  # fmt: skip
BODY = st.one_of(
    JSON,
    st.fixed_dictionaries({"inputs": st.lists(TENSOR, max_size=2)},
                          optional={"parameters": st.dictionaries(st.sampled_from(["mc_samples", "seed", "mode",
                                    "interval", "return_samples", "other"]), JSON, max_size=3),
                                    "outputs": JSON, "id": JSON}),
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODY, model=st.sampled_from(["digits", "diabetes", "nope"]))
def test_fuzzed_requests_always_get_a_proper_json_answer(
    rest: tuple[Server, Client, httpx.Client], body: Any, model: str
) -> None:
    _, _, http = rest
    answer = http.post(f"/v2/models/{model}/infer", json=body)
    assert answer.status_code in (200, 400, 404, 413), answer.text
    payload = answer.json()
    assert ("outputs" in payload) if answer.status_code == 200 else isinstance(payload.get("error"), str)


def test_the_server_is_ready_after_fuzzing_and_counted_every_call_per_protocol(
    rest: tuple[Server, Client, httpx.Client],
) -> None:
    server, _, http = rest
    assert http.get("/v2/health/ready").status_code == 200
    counted = {(s.labels["method"], s.labels["code"]): s.value for m in server.metrics.registry.collect()
               for s in m.samples if s.name == "mcdrop_requests_total" and s.labels.get("api") == "rest"}  # fmt: skip
    assert counted[("ModelInfer", "200")] >= 1 and counted[("ModelInfer", "400")] >= 10
    assert counted[("ServerReady", "200")] >= 1


def test_bearer_tokens_guard_rest_but_not_health(model_repository: Path) -> None:
    with (
        in_process_server(model_repository, http_port=free_port(), auth_tokens="s3cret") as (server, _),
        httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert http.get("/v2/health/ready").status_code == 200
        refused = http.get("/v2/models/digits")
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        assert http.get("/v2/models/digits", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/v2/models/digits", headers={"authorization": "Bearer s3cret"}).status_code == 200
