"""Models with several named inputs and outputs, end to end: exported and verified, served over mcdrop.v1, the
Open Inference Protocol (the real Triton clients, gRPC and HTTP) and scored in batch, with the same seeded numbers
everywhere, bit for bit; clear errors per input; and single-input models answering exactly as before (recorded
answers, and requests built with the old generated stubs).

The three models: ``two_inputs`` (numeric features and token ids, one class output), ``two_outputs`` (one input, a
class head and a score head) and ``shop``, a Wide & Deep model from ``mcdrop train --categorical`` (a numeric input
and two categorical inputs, a class head and a regression head).
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

keras = pytest.importorskip("keras")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb  # noqa: E402
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc  # noqa: E402
from mcdrop.serving.client import RpcFailed  # noqa: E402
from mcdrop.serving.harness.process import free_port  # noqa: E402
from mcdrop.serving.models.manifest import Manifest  # noqa: E402
from mcdrop.serving.protocols import tensors  # noqa: E402
from mcdrop.serving.scoring.job import ScoreOptions, run_score  # noqa: E402
from tests.helpers import REPO, in_process_server, run_cli  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLES, SEED, ROWS = 30, 7, 12
MODELS = ("two_inputs", "two_outputs", "shop")
OUTPUTS = {"two_inputs": [""], "two_outputs": ["cls", "score"], "shop": ["kind", "score"]}
"""Each model's outputs as arrays are named: ``FIELD`` for a single output, else ``OUTPUT/FIELD``."""
CLASSIFIERS = {"two_inputs": {""}, "two_outputs": {"cls"}, "shop": {"kind"}}


def two_inputs_model() -> Any:
    keras.utils.set_random_seed(1)
    numeric = keras.Input((4,), name="numeric")
    tokens = keras.Input((3,), name="tokens", dtype="int32")
    embedded = keras.layers.Dropout(0.2)(keras.layers.Flatten()(keras.layers.Embedding(10, 4)(tokens)))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([numeric, embedded]))
    h = keras.layers.Dropout(0.3)(h)
    return keras.Model({"numeric": numeric, "tokens": tokens}, keras.layers.Dense(3, activation="softmax")(h))


def two_outputs_model() -> Any:
    keras.utils.set_random_seed(2)
    x = keras.Input((6,))
    h = keras.layers.Dropout(0.3)(keras.layers.Dense(16, activation="relu")(x))
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    score = keras.layers.Dense(1, name="score")(h)
    return keras.Model(x, {"cls": cls, "score": score})


def shop_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """A table with numeric and categorical columns, a class target and a score target."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue", ""], rows)
    size = rng.choice(["S", "M", "L"], rows)
    a, b = rng.normal(size=rows), rng.normal(size=rows) * 3 + 10
    score = 2 * a + 1.5 * (color == "red") - (size == "L") + 0.3 * rng.normal(size=rows)
    kind = np.where(score + 0.5 * rng.normal(size=rows) > 0.5, "good", "bad")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "color", "size", "score", "kind"])
        writer.writerows(zip(a.round(4), b.round(4), color, size, score.round(4), kind, strict=True))
    return path


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three models exported (``mcdrop export``, as users run it) into one repository, and rows for each."""
    root = tmp_path_factory.mktemp("multi")
    two_inputs_model().save(root / "two_inputs.keras")
    two_outputs_model().save(root / "two_outputs.keras")
    trained = run_cli("train", "--dataset", f"csv:{shop_csv(root / 'shop.csv')}", "--target", "kind,score",
                      "--categorical", "color,size", "--hidden", "32,16", "--epochs", "3", "--out",
                      str(root / "shop"), "--quiet")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    repository = root / "repo"
    sources = {"two_inputs": root / "two_inputs.keras", "two_outputs": root / "two_outputs.keras",
               "shop": root / "shop" / "model.keras"}  # fmt: skip

    def export(name: str) -> subprocess.CompletedProcess[str]:
        return run_cli("export", str(sources[name]), "--repository", str(repository), "--name", name, "--json")

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(MODELS, pool.map(export, MODELS), strict=True))
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    rng = np.random.default_rng(3)
    manifest = Manifest.load(repository / "shop" / "1")
    categories = {spec.name: spec.categories for spec in manifest.inputs if spec.categories}
    shop_rows = list(csv.DictReader((root / "shop.csv").open()))[:ROWS]
    shop_rows[0]["color"] = "purple"  # a category training never saw: code 0
    inputs = {
        "two_inputs": {"numeric": rng.normal(size=(ROWS, 4)).astype(np.float32),
                       "tokens": rng.integers(0, 10, (ROWS, 3)).astype(np.float32)},
        "two_outputs": {"x": rng.normal(size=(ROWS, 6)).astype(np.float32)},
        "shop": {"color": codes(shop_rows, "color", categories["color"]),
                 "numeric": np.array([[float(r["a"]), float(r["b"])] for r in shop_rows], np.float32),
                 "size": codes(shop_rows, "size", categories["size"])},
    }  # fmt: skip
    return {"root": root, "repository": repository, "inputs": inputs, "shop_rows": shop_rows,
            "exports": {name: json.loads(r.stdout) for name, r in results.items()}}  # fmt: skip


def codes(rows: list[dict[str, str]], column: str, categories: tuple[str, ...] | None) -> np.ndarray:
    assert categories is not None
    return np.array([[categories.index(r[column]) + 1 if r[column] in categories else 0] for r in rows], np.float32)


@pytest.fixture(scope="module")
def served(multi: dict[str, Any]) -> Any:
    with in_process_server(multi["repository"], http_port=free_port()) as pair:
        yield pair


def decoded(blob: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob["b64"]), dtype=np.dtype(blob["dtype"])).reshape(blob["shape"])


def native_arrays(prediction: Any, model: str) -> dict[str, np.ndarray]:
    """The mcdrop.v1 client's answer as ``OUTPUT/FIELD`` arrays with the OIP wire dtypes."""
    found = {}
    for output in OUTPUTS[model]:
        p = prediction.outputs[output] if output else prediction
        start = f"{output}/" if output else ""
        if p.task == "classification":
            fields = {"mean": p.mean, "std": p.std, "predicted_class": p.predicted_class,
                      "predictive_entropy": p.predictive_entropy, "expected_entropy": p.expected_entropy,
                      "mutual_information": p.mutual_information, "variation_ratio": p.variation_ratio}  # fmt: skip
        else:
            fields = {"mean": p.mean, "std": p.std, "predictive_std": p.predictive_std, "lower": p.lower,
                      "upper": p.upper, "mean_lower": p.mean_lower, "mean_upper": p.mean_upper}  # fmt: skip
        found |= {start + name: np.asarray(value) for name, value in fields.items()}
    return found


def test_manifests_name_every_input_and_output_and_verification_covers_them(multi: dict[str, Any]) -> None:
    repository = multi["repository"]
    two = Manifest.load(repository / "two_inputs" / "1")
    assert [(i.name, i.shape, i.integer_range) for i in two.inputs] == [("numeric", (-1, 4), None),
                                                                        ("tokens", (-1, 3), (0, 9))]  # fmt: skip
    assert [o.name for o in two.outputs] == ["y"] and two.task == "classification"
    heads = Manifest.load(repository / "two_outputs" / "1")
    assert [i.name for i in heads.inputs] == ["x"]
    assert [(o.name, o.task, o.shape) for o in heads.outputs] == [("cls", "classification", (-1, 3)),
                                                                  ("score", "regression", (-1, 1))]  # fmt: skip
    shop = Manifest.load(repository / "shop" / "1")
    by_name = {i.name: i for i in shop.inputs}
    assert by_name["numeric"].feature_names == ("a", "b") and by_name["numeric"].categories is None
    assert by_name["color"].categories == ("", "blue", "green", "red") and by_name["color"].integer_range == (0, 4)
    assert by_name["size"].feature_names == ("size",) and by_name["size"].categories == ("L", "M", "S")
    kind, score = shop.outputs
    assert (kind.name, kind.task, kind.class_labels) == ("kind", "classification", ("bad", "good"))
    assert score.task == "regression" and score.observation_noise is not None
    assert score.observation_noise.precision is not None and score.observation_noise.precision[0] > 0
    for name in MODELS:  # every check ran and passed; the graphs' outputs carry the model's names
        checks = {c["check"]: c for c in multi["exports"][name]["verification"]["checks"]}
        assert {"deterministic_parity", "masked_parity", "mc_mean", "prefix_cached"} <= set(checks)
        assert all(c["passed"] for c in checks.values())
    raw = json.loads((repository / "shop" / "1" / "manifest.json").read_text())
    assert [o["name"] for o in raw["outputs"]] == ["kind", "score"] and "task" not in raw  # per output, not top level
    assert Manifest.from_json(raw).to_json() == raw  # round trip


@pytest.mark.parametrize("model", MODELS)
def test_same_seeded_numbers_over_mcdrop_v1_oip_grpc_oip_rest_and_scoring(
    model: str, multi: dict[str, Any], served: Any, tmp_path: Path
) -> None:
    server, client = served
    x = multi["inputs"][model]
    native = native_arrays(client.predict(model, x, samples=SAMPLES, seed=SEED), model)
    np.savez(tmp_path / "x.npz", **x)
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_multi_probe", f"127.0.0.1:{server.port}",
         f"127.0.0.1:{server.http_port}", model, str(tmp_path / "x.npz"), str(SAMPLES), str(SEED)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    for transport in ("grpc", "http"):
        got = {name: decoded(blob) for name, blob in answers[transport]["outputs"].items()}
        assert sorted(got) == sorted(native), transport
        for name, value in native.items():
            assert got[name].tobytes() == value.astype(got[name].dtype).tobytes(), (transport, name)
        inputs = answers[transport]["metadata"]["inputs"]
        assert sorted(i["name"] for i in inputs) == sorted(x)
    scored = score_table(model, multi, tmp_path)
    for name, value in native.items():
        output, _, field = name.rpartition("/")
        column = f"{output}/p_{field}" if output in CLASSIFIERS[model] and field in ("mean", "std") else name
        column = column.lstrip("/")
        assert np.asarray(scored.column(column).to_pylist(), value.dtype).tobytes() == value.tobytes(), name


@pytest.mark.parametrize("model", MODELS)
def test_tensorflow_serving_answers_every_output_under_its_name_with_the_same_numbers(
    model: str, multi: dict[str, Any], served: Any
) -> None:
    """TensorFlow Serving's API, official client and plain HTTP: named inputs, each model output's mean under the
    output's own name, the other fields as ``OUTPUT/FIELD`` (bare for a single output), the mcdrop.v1 numbers."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    server, client = served
    x = multi["inputs"][model]
    native = native_arrays(client.predict(model, x, samples=SAMPLES, seed=SEED), model)
    several = len(OUTPUTS[model]) > 1

    def tf_name(name: str) -> str:
        output, _, field = name.rpartition("/")
        return (output or "y") if field == "mean" else name

    expected = {tf_name(name): value for name, value in native.items()}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, value in {**x, "seed": np.int64(SEED), "mc_samples": np.int64(SAMPLES)}.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    got = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    assert sorted(got) == sorted(expected)
    assert several == ("cls" in got or "kind" in got)
    for name, value in expected.items():
        assert got[name].tobytes() == value.astype(got[name].dtype).tobytes(), name
    body = {"inputs": {**{name: value.tolist() for name, value in x.items()}, "seed": SEED, "mc_samples": SAMPLES}}
    answer = httpx.post(f"http://127.0.0.1:{server.http_port}/v1/models/{model}:predict",
                        json={**body, "output_filter": sorted(expected)}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    for name, value in answer.json()["outputs"].items():
        np.testing.assert_array_equal(np.asarray(value, got[name].dtype), got[name], err_msg=name)
    means = httpx.post(f"http://127.0.0.1:{server.http_port}/v1/models/{model}:predict", json=body, timeout=30).json()
    mean_names = [tf_name(f"{o}/mean") for o in OUTPUTS[model]]
    assert (sorted(means["outputs"]) if several else list(mean_names)) == sorted(mean_names)
    for name in mean_names:
        value = means["outputs"][name] if several else means["outputs"]
        np.testing.assert_array_equal(np.asarray(value, np.float32), got[name])


def score_table(model: str, multi: dict[str, Any], folder: Path) -> pa.Table:
    """``mcdrop score`` on the model's rows as users hold them: list columns named after the inputs, plain numeric
    columns, and the shop's own training columns (categories as text)."""
    x = multi["inputs"][model]
    if model == "two_inputs":
        table = pa.table({name: list(value) for name, value in x.items()})
    elif model == "two_outputs":
        table = pa.table({f"f{i}": x["x"][:, i] for i in range(6)})
    else:
        rows = multi["shop_rows"]
        table = pa.table({"a": [float(r["a"]) for r in rows], "b": [float(r["b"]) for r in rows],
                          "color": [r["color"] for r in rows], "size": [r["size"] for r in rows]})  # fmt: skip
    pq.write_table(table, folder / "in.parquet")
    summary = run_score(ScoreOptions(multi["repository"], model, str(folder / "in.parquet"), folder / "out.parquet",
                                     samples=SAMPLES, seed=SEED))  # fmt: skip
    assert summary.rows_scored == ROWS and summary.rows_failed == 0
    return pq.read_table(folder / "out.parquet")


def test_scoring_writes_one_column_group_per_output(multi: dict[str, Any], tmp_path: Path) -> None:
    names = score_table("shop", multi, tmp_path).column_names
    assert [n for n in names if n.startswith("kind/")] == [
        "kind/predicted_class", "kind/predicted_label", "kind/p_mean", "kind/p_std", "kind/predictive_entropy",
        "kind/expected_entropy", "kind/mutual_information", "kind/variation_ratio"]  # fmt: skip
    assert [n for n in names if n.startswith("score/")] == [
        "score/mean", "score/std", "score/predictive_std", "score/lower", "score/upper", "score/mean_lower",
        "score/mean_upper"]  # fmt: skip
    assert len(names) == 15


def test_errors_name_the_input_over_every_transport(multi: dict[str, Any], served: Any, tmp_path: Path) -> None:
    server, client = served
    x = multi["inputs"]["two_inputs"]

    def refused(inputs: dict[str, np.ndarray]) -> str:
        with pytest.raises(RpcFailed) as caught:
            client.predict("two_inputs", inputs, samples=4, seed=1)
        assert caught.value.code == "INVALID_ARGUMENT"
        return str(caught.value)

    assert "tokens" in refused({"numeric": x["numeric"]}) and "missing" in refused({"numeric": x["numeric"]})
    assert "extra" in refused({**x, "extra": x["numeric"]})
    message = refused({"numeric": x["numeric"], "tokens": x["tokens"][:, :2]})
    assert "tokens" in message and "[12, 2]" in message, message
    assert "tokens" in refused({"numeric": x["numeric"], "tokens": x["tokens"][:5]})  # another batch size
    assert "tokens" in refused({"numeric": x["numeric"], "tokens": x["tokens"] + 0.5})  # not token ids
    np.savez(tmp_path / "x.npz", **x)
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_multi_probe", f"127.0.0.1:{server.port}",
         f"127.0.0.1:{server.http_port}", "two_inputs", str(tmp_path / "x.npz"), "4", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    for transport, status in (("grpc", "StatusCode.INVALID_ARGUMENT"), ("http", "400")):
        errors = answers[transport]["errors"]
        assert {e["status"] for e in errors.values()} == {status}, (transport, errors)
        assert "tokens" in errors["missing_input"]["message"]
        assert "extra" in errors["extra_input"]["message"]
        assert "no_such_input" in errors["misnamed_input"]["message"]
        assert "tokens" in errors["wrong_shape"]["message"]
        assert "numeric" in errors["wrong_datatype"]["message"] and "FP64" in errors["wrong_datatype"]["message"]
        assert answers[transport]["ready_after_errors"] is True


def test_predict_cli_takes_named_files_and_npz_and_shows_each_output(
    multi: dict[str, Any], served: Any, tmp_path: Path
) -> None:
    server, client = served
    address = f"127.0.0.1:{server.port}"
    x = multi["inputs"]["shop"]
    np.save(tmp_path / "numeric.npy", x["numeric"])
    (tmp_path / "color.json").write_text(json.dumps(x["color"].tolist()))
    (tmp_path / "size.csv").write_text("size\n" + "\n".join(str(int(v)) for v in x["size"][:, 0]) + "\n")
    np.savez(tmp_path / "all.npz", **x)
    common = ("predict", "--server", address, "--model", "shop", "--samples", str(SAMPLES), "--seed", str(SEED))
    files = {"numeric": "numeric.npy", "color": "color.json", "size": "size.csv"}
    named = run_cli(*common, *[f"--input={name}={tmp_path / file}" for name, file in files.items()], "--json")
    packed = run_cli(*common, "--input", str(tmp_path / "all.npz"), "--json")
    assert named.returncode == 0 and packed.returncode == 0, named.stderr + packed.stderr
    by_files, by_npz = (untimed(json.loads(answer.stdout)) for answer in (named, packed))
    assert by_files == by_npz and sorted(by_files["outputs"]) == ["kind", "score"]
    native = client.predict("shop", x, samples=SAMPLES, seed=SEED)
    assert by_files["outputs"]["score"]["mean"] == native.outputs["score"].mean.tolist()
    assert by_files["outputs"]["kind"]["predicted_label"] == native.outputs["kind"].predicted_label
    table = run_cli(*common, "--input", str(tmp_path / "all.npz"))
    assert table.returncode == 0 and "output kind" in table.stdout and "output score" in table.stdout
    missing = run_cli(*common, "--input", f"numeric={tmp_path / 'numeric.npy'}")
    assert missing.returncode == 2 and "color" in missing.stderr and "Traceback" not in missing.stderr
    mixed = run_cli(*common, "--input", f"numeric={tmp_path / 'numeric.npy'}", "--input", str(tmp_path / "all.npz"))
    assert mixed.returncode == 2 and "NAME=FILE" in mixed.stderr


def untimed(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key not in ("queue_ms", "compute_ms")}


def test_metadata_lists_every_input_and_output(served: Any) -> None:
    """mcdrop.v1 GetModelMetadata as a client without mcdrop's own client code reads it."""
    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        meta = stub.GetModelMetadata(pb.GetModelMetadataRequest(model="shop"), timeout=30)
    assert [(i.tensor.name, list(i.tensor.shape)) for i in meta.inputs] == [("color", [-1, 1]), ("numeric", [-1, 2]),
                                                                            ("size", [-1, 1])]  # fmt: skip
    color, numeric, size = meta.inputs
    assert list(color.categories) == ["", "blue", "green", "red"] and list(size.categories) == ["L", "M", "S"]
    assert (color.integer_low, color.integer_high, color.has_integer_range) == (0, 4, True)
    assert list(numeric.feature_names) == ["a", "b"] and not numeric.categories
    assert [(o.tensor.name, o.task) for o in meta.outputs] == [("kind", "classification"), ("score", "regression")]
    kind, score = meta.outputs
    assert list(kind.class_labels) == ["bad", "good"] and list(score.target_names) == ["score"]
    assert not score.epistemic_only
    assert (meta.input.name, meta.task) == ("color", "classification")  # the first input and output, as documented


@pytest.fixture(scope="module")
def recorded_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-input models exported before several inputs and outputs existed (M2 and M3.2), together."""
    root = tmp_path_factory.mktemp("recorded") / "repo"
    for source in ("m2_repository", "m32_repository"):
        shutil.copytree(DATA / source, root, dirs_exist_ok=True)
    return root


def test_single_input_answers_are_the_recorded_bytes_for_new_and_old_clients(
    recorded_repository: Path, tmp_path: Path
) -> None:
    """Same seed, same bytes: mcdrop.v1 responses (with the samples) and OIP REST answers as recorded by the release
    before this change, asked by today's stubs and by the previous generated stubs."""
    recorded = json.loads((DATA / "m32_answers.json").read_text())
    with in_process_server(recorded_repository, http_port=free_port()) as (server, _):
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        predict = channel.unary_unary("/mcdrop.v1.Inference/Predict",
                                      request_serializer=pb.PredictRequest.SerializeToString,
                                      response_deserializer=pb.PredictResponse.FromString)  # fmt: skip
        import httpx

        for name in ("digits-m2", "regress-m32"):
            rows = np.asarray(recorded[f"{name}/rows"], np.float32)
            for kind, extra in (("mc", {"samples": 20, "seed": 11, "return_samples": True}),
                                ("det", {"mode": pb.DETERMINISTIC})):  # fmt: skip
                response = predict(pb.PredictRequest(model=name, input=tensors.encode(rows), **extra), timeout=30)
                response.queue_ms = response.compute_ms = 0
                assert response.SerializeToString(deterministic=True).hex() == recorded[f"{name}/{kind}/v1"]
            body = {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.reshape(-1).tolist()}
                ],
                "parameters": {"mc_samples": 20, "seed": 11},
            }
            answer = httpx.post(f"http://127.0.0.1:{server.http_port}/v2/models/{name}/infer", json=body, timeout=30)
            assert answer.json() == recorded[f"{name}/mc/rest"]
        channel.close()
        old = subprocess.run(
            [sys.executable, "-m", "tests.serving.probes.old_client_probe", f"127.0.0.1:{server.port}",
             str(DATA / "m32_answers.json")],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert old.returncode == 0, old.stderr
    answers = json.loads(old.stdout)
    for key, value in recorded.items():
        if key.endswith("/v1"):
            assert answers[key] == value, key
    assert answers["digits-m2/metadata"] == {"input": "x", "input_shape": [-1, 64], "output_shape": [-1, 10],
                                             "task": "classification"}  # fmt: skip


def test_a_model_with_several_outputs_calibrates_each_and_answers_per_output(
    multi: dict[str, Any], tmp_path: Path
) -> None:
    """``--target OUTPUT=COLUMN`` per output: the class output abstains, the score output gets conformal intervals,
    each under its own ``OUTPUT/`` names."""
    import shutil

    repository = tmp_path / "repo"
    shutil.copytree(multi["repository"] / "shop", repository / "shop")
    rows = shop_csv(tmp_path / "held-out.csv", rows=300, seed=11)  # fresh rows from the same process
    calibrated = run_cli("calibrate", str(repository / "shop" / "1"), "--data", str(rows), "--target",
                         "kind=kind,score=score", "--abstain-target", "coverage=0.8", "--json")  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr
    record = json.loads(calibrated.stdout)
    assert record["version"] == 2
    tasks = {o["output"]: o["task"] for o in record["calibration"]["outputs"]}
    assert tasks == {"kind": "classification", "score": "regression"}
    with in_process_server(repository, http_port=free_port()) as (server, client):
        answer = client.predict("shop", multi["inputs"]["shop"], seed=SEED)
        kind, score = answer.outputs["kind"], answer.outputs["score"]
        assert kind.abstain is not None and len(kind.abstain) == ROWS and kind.abstain_score_name is not None
        assert score.interval_calibration == "conformal" and score.abstain is None
        body = {"inputs": [{"name": name, "datatype": "FP32", "shape": list(value.shape),
                            "data": value.reshape(-1).tolist()} for name, value in multi["inputs"]["shop"].items()],
                "parameters": {"seed": SEED}}  # fmt: skip
        import httpx

        found = httpx.post(f"http://127.0.0.1:{server.http_port}/v2/models/shop/infer", json=body, timeout=30).json()
        names = [o["name"] for o in found["outputs"]]
        assert "kind/abstain" in names and "kind/abstain_score" in names and "score/abstain" not in names
        assert found["parameters"]["score/interval_calibration"] == "conformal"
        abstain = next(o for o in found["outputs"] if o["name"] == "kind/abstain")["data"]
        assert abstain == kind.abstain.tolist()
