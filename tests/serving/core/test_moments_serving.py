"""Mode ``moments`` end to end: the same seeded numbers over mcdrop.v1, OIP gRPC and REST (the real Triton clients),
``mcdrop predict`` and ``mcdrop score``; metadata lists the mode only where the version has the graph; clear
refusals elsewhere (a version exported before moments graphs existed, samples asked of a one-pass answer).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

pytest.importorskip("keras")

import pyarrow as pa
import pyarrow.parquet as pq

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.client import RpcFailed
from mcdrop.serving.harness.process import free_port
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.scoring.job import ScoreOptions, run_score
from tests.helpers import REPO, in_process_server, run_cli

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLES, SEED = 300, 11
OLD = "digits-m2"


@pytest.fixture(scope="module")
def repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits and diabetes (with moments graphs) beside a version exported by M2 (without)."""
    root = tmp_path_factory.mktemp("moments") / "repo"
    shutil.copytree(model_repository, root)
    shutil.copytree(DATA / "m2_repository" / OLD, root / OLD)
    return root


@pytest.fixture(scope="module")
def served(repository: Path) -> Any:
    with in_process_server(repository, http_port=free_port()) as pair:
        yield pair


def rows(model: str, digits_rows: np.ndarray) -> np.ndarray:
    if model == "digits":
        return digits_rows
    return np.random.default_rng(5).normal(0.0, 0.04, (6, 10)).astype(np.float32)


FIELDS = {
    "classification": ("mean", "std", "predicted_class", "predictive_entropy", "expected_entropy",
                       "mutual_information", "variation_ratio"),
    "regression": ("mean", "std", "predictive_std", "lower", "upper", "mean_lower", "mean_upper"),
}  # fmt: skip


def decoded(blob: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob["b64"]), dtype=np.dtype(blob["dtype"])).reshape(blob["shape"])


@pytest.mark.parametrize("model", ["digits", "diabetes"])
def test_same_numbers_over_every_transport_and_scoring(
    model: str, served: Any, repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    server, client = served
    x = rows(model, digits_rows)
    native = client.predict(model, x, mode="moments", samples=SAMPLES, seed=SEED)
    assert native.mode == "moments"
    task = native.task
    assert native.samples == (SAMPLES if task == "classification" else 0)  # regression: closed form, no draws
    expected = {name: np.asarray(getattr(native, name)) for name in FIELDS[task]}
    again = client.predict(model, x, mode="moments", samples=SAMPLES, seed=SEED)
    assert all(np.array_equal(np.asarray(getattr(again, n)), v) for n, v in expected.items())  # seeded: repeatable

    np.save(tmp_path / "x.npy", x)
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_moments_probe", f"127.0.0.1:{server.port}",
         f"127.0.0.1:{server.http_port}", model, str(tmp_path / "x.npy"), str(SAMPLES), str(SEED), OLD],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    for transport in ("grpc", "http"):
        answer = answers[transport]
        assert answer["parameters"]["mode"] == "moments", transport
        for name, value in expected.items():
            got = decoded(answer["outputs"][name])
            assert got.tobytes() == value.astype(got.dtype).tobytes(), (transport, name)

    cli = run_cli("predict", "--server", f"127.0.0.1:{server.port}", "--model", model, "--input",
                  str(tmp_path / "x.npy"), "--mode", "moments", "--samples", str(SAMPLES), "--seed", str(SEED),
                  "--json")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert printed["mode"] == "moments"
    for name, value in expected.items():
        assert np.array_equal(np.asarray(printed[name], value.dtype), value), name

    names = Manifest.load(repository / model / "1").input.feature_names
    assert names is not None
    pq.write_table(pa.table({name: x[:, i] for i, name in enumerate(names)}), tmp_path / "in.parquet")
    summary = run_score(ScoreOptions(repository, model, str(tmp_path / "in.parquet"), tmp_path / "out.parquet",
                                     samples=SAMPLES, seed=SEED, mode="moments", batch_size=3))  # fmt: skip
    assert summary.rows_scored == len(x)
    scored = pq.read_table(tmp_path / "out.parquet")
    for name, value in expected.items():  # units of 3 rows: the logit draws depend on each row's position only
        column = {"mean": "p_mean", "std": "p_std"}.get(name, name) if task == "classification" else name
        assert np.asarray(scored.column(column).to_pylist(), value.dtype).tobytes() == value.tobytes(), name


def test_moments_approximates_monte_carlo_and_says_so(served: Any, digits_rows: np.ndarray) -> None:
    _, client = served
    approx = client.predict("digits", digits_rows, mode="moments", samples=1000, seed=1)
    mc = client.predict("digits", digits_rows, mode="monte_carlo", samples=1000, seed=1)
    assert approx.mode == "moments" and mc.mode == "monte_carlo"
    assert np.mean(approx.predicted_class == mc.predicted_class) >= 0.75
    assert np.max(np.abs(approx.mean - mc.mean)) < 0.15
    assert np.corrcoef(approx.mutual_information, mc.mutual_information)[0, 1] > 0.5
    manifest = client.manifest("digits")
    assert manifest.moments is not None and manifest.moments.available
    assert manifest.moments.check["passed"] and "independent" in manifest.moments.approximation


def test_metadata_lists_moments_only_for_versions_with_the_graph(served: Any) -> None:
    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        new = stub.GetModelMetadata(pb.GetModelMetadataRequest(model="digits"))
        old = stub.GetModelMetadata(pb.GetModelMetadataRequest(model=OLD))
    assert list(new.modes) == [pb.DETERMINISTIC, pb.MONTE_CARLO, pb.MOMENTS]
    assert list(old.modes) == [pb.DETERMINISTIC, pb.MONTE_CARLO]


def test_moments_refused_clearly_where_it_cannot_be_served(
    served: Any, repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    server, client = served
    with pytest.raises(RpcFailed) as refused:
        client.predict(OLD, digits_rows, mode="moments")
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "no moments graph" in str(refused.value) and "exported before" in str(refused.value)
    assert "deterministic, monte_carlo" in str(refused.value)  # what this version does answer
    with pytest.raises(RpcFailed, match="return_samples cannot be used with mode MOMENTS") as samples:
        client.predict("digits", digits_rows, mode="moments", return_samples=True)
    assert samples.value.code == "INVALID_ARGUMENT"
    with pytest.raises(RpcFailed, match="tolerance") as adaptive:
        client.predict("digits", digits_rows, mode="moments", tolerance=0.01)
    assert adaptive.value.code == "INVALID_ARGUMENT"

    np.save(tmp_path / "x.npy", digits_rows)
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_moments_probe", f"127.0.0.1:{server.port}",
         f"127.0.0.1:{server.http_port}", "digits", str(tmp_path / "x.npy"), "10", "1", OLD],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    answers = json.loads(probe.stdout)
    assert answers["grpc"]["refusal"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert answers["http"]["refusal"]["status"] == "400"
    for transport in ("grpc", "http"):
        assert "no moments graph" in answers[transport]["refusal"]["message"]
    assert answers["http"]["modes"] == "deterministic,monte_carlo,moments"

    cli = run_cli("predict", "--server", f"127.0.0.1:{server.port}", "--model", OLD, "--input",
                  str(tmp_path / "x.npy"), "--mode", "moments")  # fmt: skip
    assert cli.returncode == 2 and "no moments graph" in cli.stderr and "Traceback" not in cli.stderr
    pq.write_table(pa.table({f"pixel_{i}": digits_rows[:, i] for i in range(64)}), tmp_path / "in.parquet")
    score = run_cli("score", "--repository", str(repository), "--model", OLD, "--input", str(tmp_path / "in.parquet"),
                    "--output", str(tmp_path / "out.parquet"), "--mode", "moments", "--quiet")  # fmt: skip
    assert score.returncode == 2 and "no moments graph" in score.stderr and "Traceback" not in score.stderr
