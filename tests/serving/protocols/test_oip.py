"""The Open Inference Protocol endpoint, called by the real Triton client (a client mcdrop did not write)."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.serving.client import Client
from tests.helpers import REPO, server_process

# Only look for it: importing tritonclient here would clash with the server's own `inference` protos.
if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("tritonclient is not installed (dev extra)", allow_module_level=True)


def decoded(blob: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob["b64"]), dtype=np.dtype(blob["dtype"])).reshape(blob["shape"])


@pytest.fixture(scope="module")
def probe(model_repository: Path, digits_rows: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("oip")
    np.save(root / "rows.npy", digits_rows[:4])
    with server_process(model_repository, root / "server.log") as server:
        result = subprocess.run(
            [sys.executable, "-m", "tests.serving.probes.triton_probe", server.address, "digits",
         str(root / "rows.npy")],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)
        with Client(server.address) as client:
            native = client.predict("digits", digits_rows[:4], samples=100, seed=1234)
            answer["native"] = native
            answer["native_deterministic"] = client.predict("digits", digits_rows[:4], mode="deterministic")
        assert server.stop() == 0
    return answer


def test_liveness_readiness_and_metadata(probe: dict[str, Any]) -> None:
    assert probe["live"] is True and probe["ready"] is True
    assert probe["model_ready"] is True and probe["unknown_model_ready"] is False
    assert probe["server_metadata"]["name"] == "mcdrop"
    meta = probe["metadata"]
    assert meta["name"] == "digits" and meta["versions"] == ["1"] and meta["platform"] == "litert_mcdropout"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}]
    outputs = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert outputs["mean"] == "FP32" and outputs["predicted_class"] == "INT64"
    assert {"mutual_information", "predictive_entropy", "expected_entropy", "variation_ratio", "samples"} <= set(
        outputs
    )


def test_seeded_infer_matches_the_native_api_exactly(probe: dict[str, Any]) -> None:
    native = probe["native"]
    mean = decoded(probe["infer"]["mean"])
    assert mean.dtype == np.float32 and mean.shape == (4, 10)
    assert mean.tobytes() == native.mean.tobytes()  # bit-identical, same seed, same data plane
    assert decoded(probe["infer"]["std"]).tobytes() == native.std.tobytes()
    np.testing.assert_array_equal(decoded(probe["infer"]["predicted_class"]), native.predicted_class)
    np.testing.assert_array_equal(decoded(probe["infer"]["mutual_information"]), native.mutual_information)
    assert probe["infer_parameters"]["mc_samples"] == {"int64_param": "100"}
    assert probe["infer_parameters"]["seed"] == {"int64_param": "1234"}
    assert probe["infer_parameters"]["model_version"] == {"string_param": "1"}
    assert probe["infer_parameters"]["mode"] == {"string_param": "monte_carlo"}
    assert probe["samples_shape"] == [20, 4, 10]
    assert decoded(probe["deterministic_mean"]).tobytes() == probe["native_deterministic"].mean.tobytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_datatype", "Expected FP32. Received: FP64"),
        ("wrong_shape", "Expected [-1, 64] (-1 = any batch size). Received: [4, 63]"),
        ("short_raw_buffer", "Expected 1024 bytes (4 x 64 x 4 bytes of FP32). Received: 1008 bytes"),
        ("wrong_input_name", "Unknown input 'pixels'. Expected inputs: 'x'."),
        ("negative_samples", "Expected 1 <= T"),
        ("string_samples", "Expected int64 (int64_param). Received: string_param"),
    ],
)
def test_bad_requests_get_invalid_argument(probe: dict[str, Any], case: str, message: str) -> None:
    error = probe["errors"][case]
    assert error["status"] == "StatusCode.INVALID_ARGUMENT", error
    assert message in error["message"], error["message"]
    assert probe["ready_after_errors"] is True


def test_unknown_model_is_not_found(probe: dict[str, Any]) -> None:
    assert probe["errors"]["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
