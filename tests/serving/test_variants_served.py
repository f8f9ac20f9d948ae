"""Quantised variants served: the ``variant`` parameter on mcdrop.v1, the OIP over gRPC and REST (mcdrop's and
Triton's clients) and batch scoring; seeded requests reproducible per variant and identical across transports; the
server's default variant; metadata listing each variant with its agreement; unexported variants refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mcdrop.serving.client import Client, RestClient
from mcdrop.serving.errors import RpcFailed
from mcdrop.serving.harness.process import free_port
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.server.server import Server
from tests.helpers import REPO, in_process_server
from tests.serving.core.test_multi_io import decoded

SEED = 11
SAMPLES = 50


@pytest.fixture(scope="module")
def served(variant_repository: Path) -> Iterator[tuple[Server, Client, RestClient]]:
    with in_process_server(variant_repository, http_port=free_port()) as (server, client):
        yield server, client, RestClient(f"http://127.0.0.1:{server.http_port}", timeout=30)


@pytest.fixture(scope="module")
def rows(calibration_files: dict[str, Path]) -> np.ndarray:
    return np.load(calibration_files["digits"])["x"][:24].astype(np.float32)


def test_each_variant_answers_reproducibly_and_close_to_float32(
    served: tuple[Server, Client, RestClient], rows: np.ndarray
) -> None:
    _, client, _ = served
    reference = client.predict("digits", rows, seed=SEED, samples=SAMPLES)
    assert reference.variant == "float32"
    for variant in ("dynamic-int8", "int8", "int8-io"):
        first = client.predict("digits", rows, seed=SEED, samples=SAMPLES, variant=variant)
        again = client.predict("digits", rows, seed=SEED, samples=SAMPLES, variant=variant)
        assert first.variant == variant
        np.testing.assert_array_equal(first.mean, again.mean)  # a seeded request is bit-reproducible per variant
        np.testing.assert_array_equal(first.mutual_information, again.mutual_information)
        assert not np.array_equal(first.mean, reference.mean)  # other graphs answered, not float32's
        assert np.mean(first.predicted_class == reference.predicted_class) >= 0.9
        assert np.abs(first.mean - reference.mean).max() < 0.35


def test_int8_and_int8_io_give_the_same_answer(served: tuple[Server, Client, RestClient], rows: np.ndarray) -> None:
    """int8-io only moves the quantisation of the input and output to the server (the graphs are the same int8)."""
    _, client, _ = served
    inner = client.predict("digits", rows, seed=SEED, samples=SAMPLES, variant="int8")
    outer = client.predict("digits", rows, seed=SEED, samples=SAMPLES, variant="int8-io")
    np.testing.assert_allclose(outer.mean, inner.mean, atol=1e-6)


def test_the_same_seeded_variant_request_is_identical_on_every_transport(
    served: tuple[Server, Client, RestClient], rows: np.ndarray, tmp_path: Path, variant_repository: Path
) -> None:
    server, client, rest = served
    expected = client.predict("digits", rows, seed=SEED, samples=SAMPLES, variant="int8")
    over_rest = rest.predict("digits", rows, seed=SEED, samples=SAMPLES, variant="int8")
    assert over_rest.variant == "int8"
    np.testing.assert_array_equal(over_rest.mean, expected.mean)
    np.savez(tmp_path / "x.npz", x=rows)
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_multi_probe", f"127.0.0.1:{server.port}",
         f"127.0.0.1:{server.http_port}", "digits", str(tmp_path / "x.npz"), str(SAMPLES), str(SEED),
         json.dumps({"variant": "int8"})],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for transport in ("grpc", "http"):
        np.testing.assert_array_equal(decoded(found[transport]["outputs"]["mean"]), expected.mean, err_msg=transport)
        assert found[transport]["parameters"]["variant"] == "int8"
    np.save(tmp_path / "rows.npy", rows)
    from mcdrop.serving.scoring.job import ScoreOptions, run_score

    summary = run_score(ScoreOptions(repository=variant_repository, model="digits", input=str(tmp_path / "rows.npy"),
                                     output=tmp_path / "scored.parquet", seed=SEED, samples=SAMPLES,
                                     variant="int8"))  # fmt: skip
    assert summary.variant == "int8"
    import pyarrow.parquet as pq

    scored = pq.read_table(tmp_path / "scored.parquet")
    means = np.asarray(scored.column("p_mean").to_pylist(), np.float32)
    np.testing.assert_allclose(means, expected.mean, atol=1e-7)


def test_an_unexported_or_unknown_variant_is_refused_by_name(
    served: tuple[Server, Client, RestClient], rows: np.ndarray, model_repository: Path
) -> None:
    server, client, _ = served
    for variant, hint in (("float16", "--quantize float16"), ("int4", "Variants are float32")):
        with pytest.raises(RpcFailed) as grpc_error:
            client.predict("digits", rows, variant=variant)
        assert grpc_error.value.code == "INVALID_ARGUMENT"
        message = grpc_error.value.message
        assert f"no variant {variant!r}" in message and "float32, dynamic-int8, int8, int8-io" in message
        assert hint in message
        response = httpx.post(f"http://127.0.0.1:{server.http_port}/v2/models/digits/infer", json={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": rows[0].tolist()}],
            "parameters": {"variant": variant}}, timeout=30)  # fmt: skip
        assert response.status_code == 400 and f"no variant {variant!r}" in response.json()["error"]
    with pytest.raises(RpcFailed, match="MOMENTS is served in float32 only"):
        client.predict("digits", rows, mode="moments", variant="int8")
    assert client.predict("digits", rows[:2], variant="float32").variant == "float32"


def test_metadata_lists_each_variant_with_its_agreement(
    served: tuple[Server, Client, RestClient], variant_repository: Path
) -> None:
    server, client, _ = served
    from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
    from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc

    stub = pb_grpc.InferenceStub(client._channel)
    metadata = stub.GetModelMetadata(pb.GetModelMetadataRequest(model="digits"), timeout=10)
    assert [v.name for v in metadata.variants] == ["float32", "dynamic-int8", "int8", "int8-io"]
    manifest = Manifest.load(variant_repository / "digits" / "1")
    int8 = next(v for v in metadata.variants if v.name == "int8")
    assert int8.deterministic_bytes == manifest.file_bytes["deterministic.int8.tflite"]
    assert int8.deterministic_bytes < 0.5 * metadata.variants[0].deterministic_bytes  # a small model: headers weigh
    assert "RANDOM_UNIFORM" in int8.float_ops
    recorded = manifest.variants["int8"].agreement["outputs"]["y"]
    assert float(int8.agreement["top1_agreement"]) == recorded["top1_agreement"]
    assert float(int8.agreement["ood_auroc/int8"]) == recorded["ood_auroc"]["int8"]
    parameters = httpx.get(f"http://127.0.0.1:{server.http_port}/v2/models/digits", timeout=30).json()["parameters"]
    assert parameters["variants"] == "float32,dynamic-int8,int8,int8-io"
    assert float(parameters["variant/int8/mutual_information_spearman"]) == recorded["mutual_information_spearman"]


def test_the_server_default_variant_applies_where_a_version_has_it(
    variant_repository: Path, model_repository: Path, rows: np.ndarray, tmp_path: Path
) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(variant_repository, repo)
    shutil.copytree(model_repository / "diabetes", repo / "diabetes")  # exported without variants
    with in_process_server(repo, variant="int8") as (_, client):
        assert client.predict("digits", rows[:4], seed=SEED).variant == "int8"
        assert client.predict("digits", rows[:4], seed=SEED, variant="float32").variant == "float32"
        assert client.predict("diabetes", np.zeros((2, 10), np.float32), seed=SEED).variant == "float32"
