"""A calibrated version's decision on every transport: the same seeded request abstains on the same rows over mcdrop.v1,
the Open Inference Protocol (gRPC and REST, through mcdrop's and Triton's clients) and batch scoring; regression
intervals are the conformal ones; metadata shows the calibration; bad parameters are refused, never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcdrop.serving.client import Client, RestClient
from mcdrop.serving.errors import RpcFailed
from mcdrop.serving.harness.process import free_port
from mcdrop.serving.models.calibration import ClassificationCalibration, RegressionCalibration
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.server.server import Server
from tests.helpers import REPO, in_process_server
from tests.serving.core.test_multi_io import decoded

SEED = 5
SAMPLES = 100


@pytest.fixture(scope="module")
def served(calibrated_repository: Path) -> Iterator[tuple[Server, Client, RestClient]]:
    with in_process_server(calibrated_repository, http_port=free_port()) as (server, client):
        rest = RestClient(f"http://127.0.0.1:{server.http_port}", timeout=30)
        yield server, client, rest


@pytest.fixture(scope="module")
def rows(calibration_files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Calibration rows and uniform noise (which a digits model should abstain on)."""
    digits = np.load(calibration_files["digits"])["x"][:40]
    noise = np.random.default_rng(0).uniform(0, 16, (20, 64)).astype(np.float32)
    return {"digits": np.concatenate([digits, noise]), "diabetes": np.load(calibration_files["diabetes"])["x"][:30]}


def _calibration(repository: Path, model: str) -> Any:
    calibration = Manifest.load(repository / model / "2").calibration
    assert calibration is not None
    return calibration.outputs[0]


def test_the_calibrated_version_abstains_by_its_threshold_and_the_old_one_does_not(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray], calibrated_repository: Path
) -> None:
    _, client, _ = served
    record = _calibration(calibrated_repository, "digits")
    assert isinstance(record, ClassificationCalibration) and record.score is not None
    answer = client.predict("digits", rows["digits"], seed=SEED)
    threshold = record.threshold(record.score)
    assert answer.abstain_score_name == record.score and answer.abstain_threshold == threshold
    assert answer.abstain is not None and answer.abstain_score is not None
    np.testing.assert_array_equal(answer.abstain, answer.abstain_score > threshold)
    assert answer.abstain[40:].mean() > answer.abstain[:40].mean()  # noise is refused more often than digits
    old = client.predict("digits", rows["digits"], seed=SEED, version=1)
    assert old.abstain is None
    np.testing.assert_array_equal(old.mean, answer.mean)  # same graphs, same seed: only the decision is new


def test_the_same_seeded_request_abstains_on_the_same_rows_on_every_transport(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray], tmp_path: Path,
    calibrated_repository: Path,
) -> None:  # fmt: skip
    server, client, rest = served
    x = rows["digits"]
    expected = client.predict("digits", x, seed=SEED, samples=SAMPLES)
    over_rest = rest.predict("digits", x, seed=SEED, samples=SAMPLES)
    answers = {"REST (mcdrop client)": (over_rest.abstain, over_rest.abstain_score)}
    # Triton's clients in their own process: their protobuf package and mcdrop's cannot share one.
    np.savez(tmp_path / "x.npz", x=x)
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_multi_probe", f"127.0.0.1:{server.port}",
         f"127.0.0.1:{server.http_port}", "digits", str(tmp_path / "x.npz"), str(SAMPLES), str(SEED)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for transport in ("grpc", "http"):
        outputs = {name: decoded(blob) for name, blob in found[transport]["outputs"].items()}
        answers[f"OIP {transport} (Triton client)"] = (outputs["abstain"], outputs["abstain_score"])
    np.save(tmp_path / "rows.npy", x)
    from mcdrop.serving.scoring.job import ScoreOptions, run_score

    run_score(ScoreOptions(repository=calibrated_repository, model="digits", input=str(tmp_path / "rows.npy"),
                           output=tmp_path / "scored.parquet", seed=SEED, samples=SAMPLES))  # fmt: skip
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "scored.parquet")
    answers["mcdrop score"] = (table.column("abstain").to_numpy(), table.column("abstain_score").to_numpy())
    for name, (abstain, score) in answers.items():
        np.testing.assert_array_equal(abstain, expected.abstain, err_msg=name)
        np.testing.assert_array_equal(score, expected.abstain_score, err_msg=name)


def test_a_deterministic_answer_abstains_by_the_calibrated_baseline(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray], calibrated_repository: Path
) -> None:
    _, client, _ = served
    record = _calibration(calibrated_repository, "digits")
    answer = client.predict("digits", rows["digits"], mode="deterministic")
    assert answer.abstain_score_name == "deterministic_least_confidence"
    assert answer.abstain_threshold == record.threshold("deterministic_least_confidence")
    np.testing.assert_allclose(answer.abstain_score, 1 - answer.mean.max(axis=1).astype(np.float64))


def test_request_parameters_override_the_rule_on_any_version(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray]
) -> None:
    _, client, rest = served
    x = rows["digits"]
    everything = client.predict("digits", x, seed=SEED, abstain_threshold=1e9)
    assert not everything.abstain.any()
    for transport in (client, rest):
        old = transport.predict("digits", x, seed=SEED, version=1, abstain_threshold=0.05,
                                abstain_score="mutual_information")  # fmt: skip
        assert old.abstain_score_name == "mutual_information"
        np.testing.assert_array_equal(old.abstain, old.mutual_information > 0.05)


@pytest.mark.parametrize(("parameters", "message"), [
    ({"abstain_score": "bogus"}, "Unknown abstain_score 'bogus'. Expected one of mutual_information"),
    ({"abstain_score": "deterministic_least_confidence"}, "not computed in mode MONTE_CARLO"),
    ({"abstain_threshold": -1.0}, "Expected a finite number >= 0. Received: -1.0"),
    ({"abstain_threshold": 0.1, "version": 1}, "Expected abstain_score too"),
])  # fmt: skip
def test_bad_abstain_parameters_are_refused_with_what_was_expected(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray], parameters: dict[str, Any], message: str
) -> None:
    _, client, rest = served
    for transport in (client, rest):
        with pytest.raises(RpcFailed, match="INVALID_ARGUMENT") as failure:
            transport.predict("digits", rows["digits"][:2], seed=SEED, **parameters)
        assert message in str(failure.value)


def test_regression_intervals_are_conformal_and_say_so(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray], calibrated_repository: Path
) -> None:
    _, client, rest = served
    record = _calibration(calibrated_repository, "diabetes")
    assert isinstance(record, RegressionCalibration)
    for level in (0.8, 0.95):
        answer = client.predict("diabetes", rows["diabetes"], seed=SEED, interval=level)
        multiplier = record.conformal.multiplier(level)
        assert answer.interval_calibration == "conformal" and multiplier is not None
        half = (answer.upper.astype(np.float64) - answer.lower) / 2
        np.testing.assert_allclose(half, multiplier[0] * answer.predictive_std, rtol=1e-5)
        assert rest.predict("diabetes", rows["diabetes"], seed=SEED, interval=level).interval_calibration == "conformal"
    assert client.predict("diabetes", rows["diabetes"], mode="deterministic").interval_calibration == "gaussian"
    assert client.predict("diabetes", rows["diabetes"], seed=SEED, version=1).interval_calibration is None
    with pytest.raises(RpcFailed, match="at least 999 calibration rows") as failure:
        client.predict("diabetes", rows["diabetes"], seed=SEED, interval=0.999)
    assert f"calibrated on {record.rows}" in str(failure.value)


def test_metadata_shows_the_calibration(served: tuple[Server, Client, RestClient], calibrated_repository: Path) -> None:
    server, client, _ = served
    record = _calibration(calibrated_repository, "digits")
    parameters = httpx.get(f"http://127.0.0.1:{server.http_port}/v2/models/digits", timeout=10).json()["parameters"]
    assert parameters["abstain_target"] == "coverage=0.9" and parameters["abstain_score"] == record.score
    assert parameters["calibration_rows"] == record.rows
    assert parameters["abstain_threshold"] == record.threshold(record.score)
    old = httpx.get(f"http://127.0.0.1:{server.http_port}/v2/models/digits/versions/1", timeout=10).json()
    assert "abstain_target" not in old["parameters"]
    outputs = [o["name"] for o in httpx.get(f"http://127.0.0.1:{server.http_port}/v2/models/digits",
                                            timeout=10).json()["outputs"]]  # fmt: skip
    assert "abstain" in outputs and "abstain_score" in outputs
    from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
    from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc

    stub = pb_grpc.InferenceStub(client._channel)
    metadata = stub.GetModelMetadata(pb.GetModelMetadataRequest(model="diabetes"), timeout=10)
    assert metadata.calibration["interval_calibration"] == "conformal"
    assert int(metadata.calibration["calibration_rows"]) == _calibration(calibrated_repository, "diabetes").rows
    from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
    from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc

    oip_metadata = oip_grpc.GRPCInferenceServiceStub(client._channel).ModelMetadata(
        oip.ModelMetadataRequest(name="digits"), timeout=10
    )
    assert oip_metadata.parameters["abstain_threshold"].double_param == record.threshold(record.score)
    assert oip_metadata.parameters["abstain_score"].string_param == record.score


SCORE_NAMES = st.sampled_from(["mutual_information", "least_confidence", "deterministic_least_confidence"])
REST_PARAMETERS = st.dictionaries(
    st.sampled_from(["abstain_threshold", "abstain_score", "seed", "mode", "interval"]),
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**20), st.text(max_size=10),
              st.booleans(), st.none(), SCORE_NAMES),
    max_size=4,
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parameters=REST_PARAMETERS, version=st.sampled_from(["1", "2"]),
       wanted=st.lists(st.sampled_from(["abstain", "abstain_score", "mean"]), max_size=2, unique=True))  # fmt: skip
def test_fuzzed_abstain_parameters_over_rest_get_an_answer_or_a_400(
    served: tuple[Server, Client, RestClient], rows: dict[str, np.ndarray], parameters: dict[str, Any], version: str,
    wanted: list[str],
) -> None:  # fmt: skip
    server, client, _ = served
    x = rows["digits"][:2]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}],
            "parameters": parameters, "outputs": [{"name": n} for n in wanted]}  # fmt: skip
    url = f"http://127.0.0.1:{server.http_port}/v2/models/digits/versions/{version}/infer"
    answer = httpx.post(url, json=body, timeout=30)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert isinstance(answer.json()["error"], str)
    else:
        names = [o["name"] for o in answer.json()["outputs"]]
        assert not wanted or names == wanted
    assert client.health() == "SERVING"
