"""TensorFlow Serving's API, called as TensorFlow users call it: the official ``tensorflow-serving-api`` client with
``tf.make_tensor_proto`` over gRPC, and plain HTTP for REST. Seeded answers are the Open Inference Protocol's."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402 - after the importorskip
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mcdrop.serving.client import Client  # noqa: E402
from mcdrop.serving.harness.process import free_port  # noqa: E402
from mcdrop.serving.server.server import Server  # noqa: E402
from tests.helpers import in_process_server  # noqa: E402

SEED = 11
SAMPLES = 30
CLASSIFICATION_FIELDS = ("std", "predicted_class", "predictive_entropy", "expected_entropy", "mutual_information",
                         "variation_ratio")  # fmt: skip
REGRESSION_FIELDS = ("std", "predictive_std", "lower", "upper", "mean_lower", "mean_upper")


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[tuple[Server, Client]]:
    with in_process_server(model_repository, http_port=free_port(), version_labels="stable=1,digits:canary=1",
                           max_batch=64) as pair:  # fmt: skip
        yield pair


@pytest.fixture(scope="module")
def channel(server: tuple[Server, Client]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server[0].port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def http(server: tuple[Server, Client]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server[0].http_port}", timeout=30) as client:
        yield client


def predict(channel: grpc.Channel, model: str, inputs: dict[str, Any], output_filter: tuple[str, ...] = (),
            **spec: Any) -> tuple[Any, dict[str, np.ndarray]]:  # fmt: skip
    """The official client's Predict: every input through ``tf.make_tensor_proto``; the answer's spec and arrays."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.model_spec.signature_name = spec.get("signature", "")
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return response.model_spec, {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def oip_answer(http: httpx.Client, model: str, x: np.ndarray, **parameters: Any) -> dict[str, np.ndarray]:
    """The same request over the Open Inference Protocol (REST, JSON): arrays by OIP output name."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}],
            "parameters": parameters}  # fmt: skip
    answer = http.post(f"/v2/models/{model}/infer", json=body)
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


def error_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


# gRPC ------------------------------------------------------------------------------------------------------------


def test_a_tensorflow_serving_caller_gets_the_mc_mean_under_its_output_name_and_the_oip_numbers(
    channel: grpc.Channel, http: httpx.Client, digits_rows: np.ndarray
) -> None:
    x = digits_rows[:5]
    spec, outputs = predict(channel, "digits", {"x": x, "seed": np.int64(SEED), "mc_samples": np.int64(SAMPLES)})
    assert (spec.name, spec.version.value, spec.signature_name) == ("digits", 1, "serving_default")
    assert sorted(outputs) == sorted(["y", *CLASSIFICATION_FIELDS])
    oip = oip_answer(http, "digits", x, seed=SEED, mc_samples=SAMPLES)
    np.testing.assert_array_equal(outputs["y"], oip["mean"])
    for field in CLASSIFICATION_FIELDS:
        np.testing.assert_array_equal(outputs[field], oip[field], err_msg=field)
    assert outputs["y"].dtype == np.float32 and outputs["predicted_class"].dtype == np.int64
    assert outputs["y"].shape == (5, 10) and outputs["mutual_information"].shape == (5,)


def test_only_the_usual_inputs_give_a_monte_carlo_answer(channel: grpc.Channel, digits_rows: np.ndarray) -> None:
    _, first = predict(channel, "digits", {"x": digits_rows[:4]})
    _, second = predict(channel, "digits", {"x": digits_rows[:4]})
    assert (first["mutual_information"] > 0).all()
    assert not np.array_equal(first["y"], second["y"])  # fresh masks on every unseeded call
    np.testing.assert_allclose(first["y"].sum(1), 1, atol=1e-5)


def test_controls_as_scalar_inputs_of_any_tensor_form(
    channel: grpc.Channel, http: httpx.Client, digits_rows: np.ndarray
) -> None:
    x = digits_rows[:3]
    _, deterministic = predict(channel, "digits", {"x": x.astype(np.float64), "mode": "deterministic"})
    oip = oip_answer(http, "digits", x, mode="deterministic")
    np.testing.assert_array_equal(deterministic["y"], oip["mean"])  # float64 rows convert as the OIP's do
    np.testing.assert_array_equal(deterministic["mutual_information"], 0.0)
    _, as_int32 = predict(channel, "digits", {"x": x, "seed": np.int32(SEED), "mc_samples": [SAMPLES]},
                          output_filter=("y",))  # fmt: skip
    _, as_int64 = predict(channel, "digits", {"x": x, "seed": np.int64(SEED), "mc_samples": np.int64(SAMPLES)},
                          output_filter=("y",))  # fmt: skip
    np.testing.assert_array_equal(as_int32["y"], as_int64["y"])
    _, with_samples = predict(channel, "digits", {"x": x, "seed": np.int64(SEED), "mc_samples": np.int64(SAMPLES),
                                                  "return_samples": True})  # fmt: skip
    assert with_samples["samples"].shape == (SAMPLES, 3, 10)
    np.testing.assert_allclose(with_samples["samples"].mean(0), with_samples["y"], atol=1e-6)


def test_output_filter_selects_and_orders_and_unknown_names_are_refused(
    channel: grpc.Channel, digits_rows: np.ndarray
) -> None:
    _, outputs = predict(channel, "digits", {"x": digits_rows[:2]}, output_filter=("mutual_information", "y"))
    assert sorted(outputs) == ["mutual_information", "y"]
    _, samples = predict(channel, "digits", {"x": digits_rows[:2], "mc_samples": np.int64(7)},
                         output_filter=("samples",))  # fmt: skip
    assert samples["samples"].shape == (7, 2, 10)
    error = error_of(lambda: predict(channel, "digits", {"x": digits_rows[:2]}, output_filter=("probabilities",)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "probabilities" in error.details() and "mutual_information" in error.details()


def test_versions_labels_and_signatures(channel: grpc.Channel, digits_rows: np.ndarray) -> None:
    inputs = {"x": digits_rows[:2], "seed": np.int64(SEED), "mc_samples": np.int64(5)}
    _, latest = predict(channel, "digits", inputs)
    for spec in ({"version": 1}, {"label": "stable"}, {"label": "canary"}, {"signature": "mc_dropout"}):
        answer_spec, answer = predict(channel, "digits", inputs, **spec)
        np.testing.assert_array_equal(answer["y"], latest["y"], err_msg=str(spec))
        assert answer_spec.version.value == 1
    assert predict(channel, "digits", inputs, signature="mc_dropout")[0].signature_name == "mc_dropout"
    for spec, code, words in (
        ({"version": 9}, grpc.StatusCode.NOT_FOUND, ["Version 9", "Loaded versions: 1"]),
        ({"label": "beta"}, grpc.StatusCode.NOT_FOUND, ["'beta'", "canary=1", "stable=1"]),
        ({"signature": "classify_x"}, grpc.StatusCode.INVALID_ARGUMENT, ["classify_x", "serving_default"]),
    ):
        error = error_of(lambda spec=spec: predict(channel, "digits", inputs, **spec))
        assert error.code() == code and all(w in error.details() for w in words), (spec, error.details())
    assert predict(channel, "diabetes", {"x": np.zeros((1, 10), np.float32)}, label="stable")[0].version.value == 1
    error = error_of(lambda: predict(channel, "diabetes", {"x": np.zeros((1, 10), np.float32)}, label="canary"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "stable=1" in error.details()


def test_bad_inputs_are_invalid_argument_naming_what_was_expected(
    channel: grpc.Channel, digits_rows: np.ndarray
) -> None:
    cases = [
        ({"x": digits_rows[:2, :10]}, ["Expected [B, 64]", "[2, 10]"]),
        ({"inputs": digits_rows[:2]}, ["takes inputs ['x']", "missing ['x']", "unknown ['inputs']"]),
        ({"x": digits_rows[:2], "mc_samples": np.float32(3.0)}, ["mc_samples", "Expected int"]),
        ({"x": digits_rows[:2], "mode": "fast"}, ["fast"]),
        ({"x": digits_rows[:2], "seed": np.array([1, 2])}, ["seed", "scalar"]),
        ({"x": np.array(["a", "b"])}, ["dtype", "DT_FLOAT"]),
        ({"x": np.full((2, 64), np.nan, np.float32)}, ["NaN"]),
        ({"x": np.zeros((65, 64), np.float32)}, ["1 <= B <= 64"]),
    ]
    for inputs, words in cases:
        error = error_of(lambda inputs=inputs: predict(channel, "digits", inputs))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (list(inputs), error.details())
        assert all(w in error.details() for w in words), (list(inputs), error.details())
    error = error_of(lambda: predict(channel, "nope", {"x": digits_rows[:1]}))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "digits" in error.details()


def test_regression_fields_keep_their_names(channel: grpc.Channel, http: httpx.Client) -> None:
    x = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32) * 0.05
    _, outputs = predict(channel, "diabetes", {"x": x, "seed": np.int64(SEED), "mc_samples": np.int64(SAMPLES)})
    assert sorted(outputs) == sorted(["y", *REGRESSION_FIELDS])
    oip = oip_answer(http, "diabetes", x, seed=SEED, mc_samples=SAMPLES)
    np.testing.assert_array_equal(outputs["y"], oip["mean"])
    np.testing.assert_array_equal(outputs["lower"], oip["lower"])


def test_metadata_is_a_signature_def_map_the_official_client_unpacks(channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "digits"
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert response.model_spec.version.value == 1
    default, mc = signatures.signature_def["serving_default"], signatures.signature_def["mc_dropout"]
    assert list(default.inputs) == ["x"] and default.method_name == "tensorflow/serving/predict"
    x = default.inputs["x"]
    assert x.dtype == tf.float32.as_datatype_enum and [d.size for d in x.tensor_shape.dim] == [-1, 64]
    assert set(default.outputs) == {"y", "samples", *CLASSIFICATION_FIELDS}
    assert default.outputs["predicted_class"].dtype == tf.int64.as_datatype_enum
    assert set(mc.inputs) == {"x", "mc_samples", "seed", "mode", "return_samples", "interval", "abstain_threshold",
                              "abstain_score", "variant"}  # fmt: skip
    assert mc.inputs["mode"].dtype == tf.string.as_datatype_enum and not mc.inputs["mode"].tensor_shape.dim
    assert tf.make_ndarray(mc.defaults["mc_samples"]) == 100
    assert tf.make_ndarray(mc.defaults["mode"]) == b"monte_carlo"
    for fields, words in (([], ["Missing metadata_field"]), (["signature_def", "vocab"], ["vocab"])):
        bad = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        bad.model_spec.name = "digits"
        error = error_of(
            lambda bad=bad: prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(bad)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and all(w in error.details() for w in words)


def test_model_status_lists_available_versions(channel: grpc.Channel) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "digits"
    (status,) = stub.GetModelStatus(request, timeout=30).model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0
    request.model_spec.version_label = "stable"
    assert [s.version for s in stub.GetModelStatus(request).model_version_status] == [1]
    request.model_spec.version.value = 4
    error = error_of(lambda: stub.GetModelStatus(request))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "Version 4" in error.details()
    request.model_spec.name = "nope"
    assert error_of(lambda: stub.GetModelStatus(request)).code() == grpc.StatusCode.NOT_FOUND


def test_methods_mcdrop_does_not_serve_are_unimplemented_with_a_reason(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    calls = {
        "Classify": lambda: stub.Classify(classification_pb2.ClassificationRequest()),
        "Regress": lambda: stub.Regress(regression_pb2.RegressionRequest()),
        "MultiInference": lambda: stub.MultiInference(inference_pb2.MultiInferenceRequest()),
        "HandleReloadConfigRequest": lambda: model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest()
        ),
    }
    for method, call in calls.items():
        error = error_of(call)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED, method
        assert method in error.details() and ("Predict" in error.details() or "repository" in error.details())


# REST ------------------------------------------------------------------------------------------------------------


def test_rest_row_format_answers_what_a_tensorflow_serving_caller_parses(
    http: httpx.Client, digits_rows: np.ndarray
) -> None:
    x = digits_rows[:3]
    answer = http.post("/v1/models/digits:predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.text
    predictions = np.asarray(answer.json()["predictions"])  # a list of probability vectors, one per instance
    assert predictions.shape == (3, 10)
    np.testing.assert_allclose(predictions.sum(1), 1, atol=1e-5)
    seeded = {"signature_name": "serving_default",
              "instances": [{"x": row, "seed": SEED, "mc_samples": SAMPLES} for row in x.tolist()],
              "output_filter": ["y", "mutual_information"]}  # fmt: skip
    rows = http.post("/v1/models/digits/versions/1:predict", json=seeded).json()["predictions"]
    oip = oip_answer(http, "digits", x, seed=SEED, mc_samples=SAMPLES)
    assert [sorted(row) for row in rows] == [["mutual_information", "y"]] * 3
    np.testing.assert_array_equal(np.asarray([r["y"] for r in rows], np.float32), oip["mean"])
    np.testing.assert_array_equal([r["mutual_information"] for r in rows], oip["mutual_information"])


def test_rest_columnar_format_and_every_output_equal_grpc(
    http: httpx.Client, channel: grpc.Channel, digits_rows: np.ndarray
) -> None:
    x = digits_rows[:4]
    names = ["y", *CLASSIFICATION_FIELDS]
    body = {"inputs": {"x": x.tolist(), "seed": SEED, "mc_samples": SAMPLES, "mode": {"b64": base64.b64encode(
        b"monte_carlo").decode()}}, "output_filter": names}  # fmt: skip
    answer = http.post("/v1/models/digits/labels/stable:predict", json=body)
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    _, grpc_outputs = predict(channel, "digits", {"x": x, "seed": np.int64(SEED), "mc_samples": np.int64(SAMPLES)})
    for name in names:
        np.testing.assert_array_equal(np.asarray(outputs[name], grpc_outputs[name].dtype), grpc_outputs[name], name)
    single = http.post("/v1/models/digits:predict", json={"inputs": x.tolist(), "signature_name": "mc_dropout"})
    assert np.asarray(single.json()["outputs"]).shape == (4, 10)


def test_rest_status_metadata_and_model_config(http: httpx.Client) -> None:
    expected = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}  # fmt: skip
    for path in ("/v1/models/digits", "/v1/models/digits/versions/1", "/v1/models/digits/labels/canary"):
        assert http.get(path).json() == expected, path
    metadata = http.get("/v1/models/digits/metadata").json()
    assert metadata["model_spec"] == {"name": "digits", "version": "1", "signature_name": ""}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"] == {"dtype": "DT_FLOAT", "name": "x", "tensor_shape": {
        "dim": [{"size": "-1", "name": ""}, {"size": "64", "name": ""}], "unknown_rank": False}}  # fmt: skip
    assert signature["outputs"]["y"]["dtype"] == "DT_FLOAT"
    assert http.get("/v1/models/digits/versions/1/metadata").json() == metadata
    config = http.get("/v2/models/digits/config").json()
    assert config["max_batch_size"] == 64 and config["input"] == [{"name": "x", "data_type": "TYPE_FP32",
                                                                    "dims": [64]}]  # fmt: skip
    assert {"name": "mutual_information", "data_type": "TYPE_FP64", "dims": [1], "reshape": {"shape": []}} in (
        config["output"]
    )
    assert "samples" not in {o["name"] for o in config["output"]}
    assert "model_configuration" in http.get("/v2").json()["extensions"]


def test_triton_clients_read_the_model_configuration_in_this_process(server: tuple[Server, Client]) -> None:
    """Triton's gRPC client loads beside mcdrop's own copy of the ``inference`` messages (their own descriptor pool)
    and reads the same configuration as REST."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    port, http_port = server[0].port, server[0].http_port
    config = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}").get_model_config("digits", as_json=True)["config"]
    rest = triton_http.InferenceServerClient(f"127.0.0.1:{http_port}").get_model_config("digits")
    assert config["max_batch_size"] == rest["max_batch_size"] == 64
    assert config["platform"] == rest["platform"] == "litert_mcdropout" and config["backend"] == "mcdrop"
    assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in config["input"]] == [("x", "TYPE_FP32",
                                                                                                  [64])]  # fmt: skip
    assert [o["name"] for o in config["output"]] == [o["name"] for o in rest["output"]]
    assert config["parameters"]["default_samples"]["string_value"] == "100"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/v1/models/digits:predict", {"instances": [[1.0] * 10]}, 400, ["Expected [B, 64]"]),
        ("POST", "/v1/models/digits:predict", {"inputs": [[True] * 64]}, 400, ["booleans"]),
        (
            "POST",
            "/v1/models/digits:predict",
            {"instances": [[0.0] * 64], "inputs": [[0.0] * 64]},
            400,
            ["exactly one of"],
        ),
        (
            "POST",
            "/v1/models/digits:predict",
            {"instances": [{"x": [0.0] * 64, "seed": 1}, {"x": [0.0] * 64, "seed": 2}]},
            400,
            ["differs"],
        ),
        (
            "POST",
            "/v1/models/digits:predict",
            {"instances": [[0.0] * 64], "output_filter": ["samples"]},
            400,
            ["columnar"],
        ),
        ("POST", "/v1/models/digits:predict", {"instances": [[0.0] * 64], "signature": "x"}, 400, ["Unknown key"]),
        ("POST", "/v1/models/digits:predict", {"inputs": {"x": [[0.0] * 64], "mode": {"b64": "%%"}}}, 400, ["base64"]),
        ("POST", "/v1/models/nope:predict", {"instances": [[0.0] * 64]}, 404, ["nope", "digits"]),
        ("POST", "/v1/models/digits/labels/beta:predict", {"instances": [[0.0] * 64]}, 404, ["beta"]),
        ("POST", "/v1/models/digits:classify", {"examples": []}, 501, ["Classify", ":predict"]),
        ("POST", "/v1/models/digits:regress", {"examples": []}, 501, ["Regress"]),
        ("POST", "/v1/models/digits:explain", {}, 404, ["Malformed", ":predict"]),
        ("GET", "/v1/models/digits:predict", None, 404, ["Malformed", "POST"]),
        ("GET", "/v1/models/digits/versions/3", None, 404, ["Version 3"]),
        ("GET", "/v1/models/nope/metadata", None, 404, ["nope"]),
    ],
)
def test_rest_errors_are_json_with_tensorflow_serving_status_codes(
    http: httpx.Client, method: str, path: str, body: Any, status: int, words: list[str]
) -> None:
    answer = http.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert all(w in answer.json()["error"] for w in words), answer.json()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_ROW = st.lists(st.floats(-10, 10), min_size=64, max_size=64)
_BODIES = st.one_of(
    _JSON,
    st.fixed_dictionaries({"instances": st.one_of(_JSON, st.lists(_ROW, min_size=1, max_size=3))},
                          optional={"signature_name": _JSON, "output_filter": _JSON}),
    st.fixed_dictionaries({"inputs": st.one_of(_JSON, st.dictionaries(st.sampled_from(["x", "mc_samples", "seed",
                                                                                        "mode", "variant", "y"]),
                                                                      st.one_of(_JSON, st.lists(_ROW, max_size=2))))},
                          optional={"output_filter": st.lists(st.sampled_from(["y", "std", "samples", "z"]))}),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES, path=st.sampled_from(["/v1/models/digits:predict", "/v1/models/digits/versions/1:predict",
                                           "/v1/models/digits/labels/stable:predict"]))  # fmt: skip
def test_fuzzed_rest_bodies_always_get_a_proper_answer(http: httpx.Client, body: Any, path: str) -> None:
    answer = http.post(path, json=body)
    assert answer.status_code in (200, 400, 404), answer.text
    payload = answer.json()
    assert ("predictions" in payload or "outputs" in payload) if answer.status_code == 200 else isinstance(
        payload.get("error"), str)  # fmt: skip


_SCALARS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True), st.booleans(), st.text(max_size=12),
                     st.binary(max_size=12))  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(controls=st.dictionaries(st.sampled_from(["mc_samples", "seed", "mode", "return_samples", "interval",
                                                 "abstain_threshold", "abstain_score", "variant", "other"]),
                                _SCALARS, max_size=4),
       rows=st.integers(0, 3), columns=st.sampled_from([64, 63]), output_filter=st.lists(st.text(max_size=20),
                                                                                        max_size=2))  # fmt: skip
def test_fuzzed_predict_calls_get_a_status_never_internal(
    channel: grpc.Channel, controls: dict[str, Any], rows: int, columns: int, output_filter: list[str]
) -> None:
    inputs: dict[str, Any] = {"x": np.zeros((rows, columns), np.float32), **controls}
    try:
        predict(channel, "digits", inputs, output_filter=tuple(output_filter))
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), error.details()
        assert "incident" not in error.details()


def test_the_server_is_healthy_after_fuzzing(server: tuple[Server, Client]) -> None:
    assert server[1].health() == "SERVING"
