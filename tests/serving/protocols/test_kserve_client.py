"""KServe's own Python SDK against ``mcdrop serve`` run as the KServe runtime runs it: the same numbers as Triton's."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from mcdrop.serving.harness.process import ServerProcess, free_port
from tests.helpers import REPO
from tests.tool_venvs import KSERVE_SDK

yaml = pytest.importorskip("yaml")
PROBE = Path(__file__).parents[1] / "probes" / "kserve_probe.py"
PARAMETERS = {"mc_samples": 50, "seed": 11}  # the probe's


@pytest.fixture(scope="session")
def kserve_sdk() -> Path:
    """The ``kserve`` package in a venv of its own (it pins FastAPI, pandas, the Kubernetes client, ...)."""
    return KSERVE_SDK.bin() / "python"


def runtime_environment() -> dict[str, str]:
    """The variables the KServe runtime and the InferenceService give the container."""
    documents = [d for path in sorted((REPO / "deploy" / "kserve").glob("*.yaml"))
                 for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]  # fmt: skip
    (runtime,) = [d for d in documents if d["kind"] == "ClusterServingRuntime"]
    (service,) = [d for d in documents if d["kind"] == "InferenceService"]
    env = {e["name"]: e["value"] for e in runtime["spec"]["containers"][0]["env"]}
    return env | {e["name"]: e["value"] for e in service["spec"]["predictor"]["model"].get("env", [])}


def decoded(tensor: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(tensor["b64"]), tensor["dtype"]).reshape(tensor["shape"])


def test_kserve_rest_and_grpc_clients_get_tritons_numbers_from_the_single_model_layout(
    model_repository: Path, kserve_sdk: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    mnt_models = tmp_path / "mnt-models"  # what KServe's storage initializer leaves: one version's files
    shutil.copytree(model_repository / "digits" / "1", mnt_models)
    rows = tmp_path / "rows.npy"
    np.save(rows, digits_rows[:4])
    env = runtime_environment()
    assert env["MCDROP_MODEL_NAME"] == "digits" and env["MCDROP_REPOSITORY"] == "/mnt/models"
    env |= {"MCDROP_REPOSITORY": str(mnt_models)}  # the rest as deployed; host and ports are the harness's
    http_port = free_port()
    with ServerProcess(mnt_models, "--http-port", str(http_port), env=env, log=tmp_path / "serve.log") as server:
        url = f"http://127.0.0.1:{http_port}"
        probe = subprocess.run([str(kserve_sdk), str(PROBE), url, server.address, "digits", str(rows)],
                               capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert probe.returncode == 0, probe.stdout + probe.stderr
        found = json.loads(probe.stdout)
        # Triton's HTTP client, every default (binary tensors both ways), the same request.
        triton = triton_http.InferenceServerClient(f"127.0.0.1:{http_port}")
        tensor = triton_http.InferInput("x", list(digits_rows[:4].shape), "FP32")
        tensor.set_data_from_numpy(digits_rows[:4])
        answer = triton.infer("digits", [tensor], parameters=PARAMETERS)
        expected = {o["name"]: answer.as_numpy(o["name"]) for o in answer.get_response()["outputs"]}
        triton.close()
    assert found["rest_ready"] == [True, True] and found["grpc_ready"] == [True, True]
    assert set(found["rest_json"]) == set(found["grpc"]) == set(expected)
    assert set(found["rest_binary"]) == {"mean", "std", "mutual_information"}
    for client in ("rest_json", "rest_binary", "grpc"):
        for name, tensor in found[client].items():
            array = decoded(tensor)
            assert array.dtype == expected[name].dtype and array.shape == expected[name].shape, (client, name)
            assert array.tobytes() == expected[name].tobytes(), (client, name)
    assert expected["mean"].shape == (4, 10) and np.all(expected["std"] > 0)  # a real MC answer, not zeros
    status, message = found["rest_unknown"]
    assert status == 404 and "no-such-model" in message
