"""The Open Inference Protocol over REST: the same answers as gRPC, JSON errors with the right status, never a 500."""

from __future__ import annotations

import json
import urllib.request
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
    extensions = ["mc_dropout", "binary_tensor_data", "model_configuration"]
    assert http.get("/v2").json() == {"name": "mcdrop", "version": http.get("/v2").json()["version"],
                                      "extensions": extensions}  # fmt: skip
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


@pytest.mark.parametrize("model", ["digits", "diabetes"])
def test_tritonclient_http_with_every_default_gets_the_grpc_bytes(
    rest: tuple[Server, Client, httpx.Client], model: str, digits_rows: np.ndarray
) -> None:
    """Triton's HTTP client as it comes: binary input tensors, no outputs named (``binary_data_output``), every
    output answered in binary after the JSON header."""
    import tritonclient.http as triton

    server, client, _ = rest
    x = digits_rows[:3] if model == "digits" else np.random.default_rng(2).normal(size=(3, 10)).astype(np.float32)
    triton_client = triton.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary_data=True by default
    result = triton_client.infer(model, [tensor], parameters={"mc_samples": 40, "seed": 6})
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    native = client.predict(model, x, samples=40, seed=6)
    fields = (["mean", "std", "predicted_class", "mutual_information"] if model == "digits"
              else ["mean", "std", "predictive_std", "lower", "upper"])  # fmt: skip
    assert set(fields) <= set(names)
    for name in fields:
        got = result.as_numpy(name)
        assert got.tobytes() == np.asarray(getattr(native, name)).astype(got.dtype).tobytes(), name
    one = triton.InferRequestedOutput("mean")  # binary_data=True by default, named
    named = triton_client.infer(model, [tensor], outputs=[one], parameters={"mc_samples": 40, "seed": 6})
    assert named.as_numpy("mean").tobytes() == result.as_numpy("mean").tobytes()


def binary_request(x: np.ndarray, header: dict[str, Any] | None = None, extra: bytes = b"") -> tuple[bytes, str]:
    raw = x.astype("<f4").tobytes()
    body = header or {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                  "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    text = json.dumps(body).encode()
    return text + raw + extra, str(len(text))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b, n, x: (b[:-4], n), "needs bytes 0..256"),  # truncated
        (lambda b, n, x: (b + b"\0" * 8, n), "add up to 256 bytes. Received: 264"),  # bytes left over
        (lambda b, n, x: (b, str(len(b) + 1)), "Invalid Inference-Header-Content-Length"),  # header past the end
        (lambda b, n, x: (b, "-3"), "Invalid Inference-Header-Content-Length"),
        (lambda b, n, x: (b, str(int(n) - 2)), "Invalid JSON body"),  # header cut short
        (
            lambda b, n, x: binary_request(
                x,
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 255}}
                    ]
                },
            ),
            "shape [1, 64] of FP32 is 256 bytes. Received: 255",
        ),
        (
            lambda b, n, x: binary_request(
                x,
                {
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [1, 64],
                            "data": [0] * 64,
                            "parameters": {"binary_data_size": 256},
                        }
                    ]
                },
            ),
            "both data and binary_data_size",
        ),
        (
            lambda b, n, x: binary_request(
                x,
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": "256"}}
                    ]
                },
            ),
            "Expected an integer >= 0",
        ),
    ],
    ids=[
        "truncated",
        "extra_bytes",
        "header_past_end",
        "negative_header",
        "header_short",
        "size_mismatch",
        "data_and_binary",
        "size_not_int",
    ],
)
def test_bad_binary_bodies_are_400_with_expected_and_received(
    rest: tuple[Server, Client, httpx.Client], digits_rows: np.ndarray, change: Any, message: str
) -> None:
    _, _, http = rest
    x = digits_rows[:1]
    body, length = change(*binary_request(x), x)
    answer = http.post(INFER, content=body, headers={"Inference-Header-Content-Length": length})
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_binary_bodies_are_size_checked_and_deep_json_is_a_400(
    rest: tuple[Server, Client, httpx.Client], digits_rows: np.ndarray
) -> None:
    _, _, http = rest
    big = np.zeros((1000, 64), np.float32)  # 256,000 bytes: above the 200,000-byte limit
    body, length = binary_request(big)
    answer = http.post(INFER, content=body, headers={"Inference-Header-Content-Length": length})
    assert answer.status_code == 413 and "Expected at most 200000 bytes" in answer.json()["error"]
    nested = b"[" * 100_000 + b"]" * 100_000
    answer = http.post(INFER, content=nested[:199_000])
    assert answer.status_code == 400 and "Invalid JSON body" in answer.json()["error"]
    deep = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ' + b"[" * 50_000 + b"0"
    deep += b"]" * 50_000 + b"}]}"
    answer = http.post(INFER, content=deep)
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["error"], answer.text
    assert http.get("/v2/health/ready").json() == {"ready": True}


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    depth=st.integers(1, 120_000),
    opening=st.sampled_from([b"[", b'{"a":', b'{"inputs":[']),
    inner=st.sampled_from([b"0", b"null", b'"x"', b"[]", b"{}"]),
    cut=st.one_of(st.none(), st.integers(0, 50)),
)
def test_fuzzed_deeply_nested_bodies_get_a_400_or_413_never_a_500(
    rest: tuple[Server, Client, httpx.Client], depth: int, opening: bytes, inner: bytes, cut: int | None
) -> None:
    """Nesting on both sides of the parser's depth limit (1,024), closed or cut short, inside and outside a body's
    own keys: always an answer the client can read."""
    _, _, http = rest
    closing = {b"[": b"]", b'{"a":': b"}", b'{"inputs":[': b"]}"}[opening]
    body = opening * depth + inner + closing * depth
    body = body[: len(body) - cut] if cut else body
    answer = http.post(INFER, content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (400, 413), (depth, answer.status_code, answer.text[:200])
    error = answer.json()["error"]
    if answer.status_code == 400 and depth > 1_024 and len(body) <= 200_000:
        assert "nested too deeply" in error or "Invalid JSON body" in error, error


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    rows=st.integers(0, 3),
    declared=st.one_of(st.none(), st.integers(-5, 600)),
    size_change=st.integers(-8, 8),
    tail=st.binary(max_size=40),
    header=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12)),
    outputs_binary=st.booleans(),
)
def test_fuzzed_binary_bodies_always_get_a_proper_answer(
    rest: tuple[Server, Client, httpx.Client],
    rows: int,
    declared: int | None,
    size_change: int,
    tail: bytes,
    header: str | None,
    outputs_binary: bool,
) -> None:
    """Binary bodies with wrong byte counts, truncated or extended data and any header value: 200 (with a binary
    answer that parses) or a JSON 400, never a 500."""
    _, _, http = rest
    x = np.random.default_rng(rows).uniform(0, 16, (rows, 64)).astype(np.float32)
    raw = x.tobytes()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 64],
                        "parameters": {"binary_data_size": max(0, len(raw) + size_change)}}],
            "parameters": {"binary_data_output": outputs_binary, "mc_samples": 8}}  # fmt: skip
    text = json.dumps(body).encode()
    length = header if header is not None else str(len(text) if declared is None else declared)
    answer = http.post(INFER, content=text + raw + tail, headers={"Inference-Header-Content-Length": length})
    assert answer.status_code in (200, 400), answer.text[:200]
    if answer.status_code == 400:
        assert isinstance(answer.json().get("error"), str)
        return
    if "inference-header-content-length" in answer.headers:
        size = int(answer.headers["inference-header-content-length"])
        head = json.loads(answer.content[:size])
        assert size + sum(o["parameters"]["binary_data_size"] for o in head["outputs"]) == len(answer.content)
    else:
        assert "outputs" in answer.json()


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
        in_process_server(model_repository, http_port=free_port(), auth_tokens="s3cret", metrics_port=0) as (server, _),
        httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}") as http,
    ):
        assert http.get("/v2/health/ready").status_code == 200
        refused = http.get("/v2/models/digits")
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        assert http.get("/v2/models/digits", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/v2/models/digits", headers={"authorization": "Bearer s3cret"}).status_code == 200
        # REST refusals are counted as gRPC's are: the dashboard sees both transports
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        assert "mcdrop_auth_failures_total 2.0" in scraped.splitlines()
