"""``mcdrop predict`` as a user runs it, against a live server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import in_process_server, run_cli


@pytest.fixture(scope="module")
def servers(model_repository: Path) -> Iterator[tuple[str, str]]:
    """One server's gRPC address and REST URL."""
    from mcdrop.serving.harness.process import free_port

    port = free_port()
    with in_process_server(model_repository, http_port=port) as (server, _):
        yield f"127.0.0.1:{server.port}", f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def address(servers: tuple[str, str]) -> str:
    return servers[0]


TRANSPORT_ONLY = {"queue_ms", "compute_ms", "max_standard_error", "predicted_label", "class_labels"}
"""What the gRPC answer carries and the Open Inference Protocol does not (labels, server timings, the SE)."""


@pytest.mark.parametrize(("model", "mode"), [("digits", "monte_carlo"), ("diabetes", "monte_carlo"),
                                             ("digits", "moments"), ("diabetes", "deterministic")])  # fmt: skip
def test_rest_url_gives_the_grpc_answer(
    servers: tuple[str, str], digits_rows: np.ndarray, tmp_path: Path, model: str, mode: str
) -> None:
    """``--server http://HOST:PORT`` goes through REST (binary tensors both ways): the same JSON as gRPC."""
    grpc_address, url = servers
    x = digits_rows[:3] if model == "digits" else np.random.default_rng(1).normal(0, 0.05, (3, 10)).astype("float32")
    np.save(tmp_path / "rows.npy", x)
    args = ["predict", "--model", model, "--input", str(tmp_path / "rows.npy"), "--samples", "40", "--seed", "5",
            "--mode", mode, "--json"]  # fmt: skip
    over_grpc, over_rest = run_cli(*args, "--server", grpc_address), run_cli(*args, "--server", url)
    assert over_grpc.returncode == 0 and over_rest.returncode == 0, over_rest.stderr
    expected = {k: v for k, v in json.loads(over_grpc.stdout).items() if k not in TRANSPORT_ONLY}
    got = {k: v for k, v in json.loads(over_rest.stdout).items() if k not in TRANSPORT_ONLY}
    # REST recovers tau's variance as predictive_std² − std² from float32 fields: equal to rounding, not bytes.
    noise, expected_noise = got.pop("noise_variance", None), expected.pop("noise_variance", None)
    assert (noise is None) == (expected_noise is None)
    if noise is not None:
        np.testing.assert_allclose(noise, expected_noise, rtol=1e-5)
    assert got == expected
    table = run_cli(*args[:-1], "--server", url)
    assert table.returncode == 0 and f"{model} v1 · {mode}" in table.stdout, table.stderr
    if model == "diabetes":
        assert "epistemic only" not in table.stdout  # tau recovered from predictive_std and std


def test_rest_url_errors_are_clear(servers: tuple[str, str], digits_rows: np.ndarray, tmp_path: Path) -> None:
    _, url = servers
    np.save(tmp_path / "rows.npy", digits_rows[:1, :10])
    wrong = run_cli("predict", "--server", url, "--model", "digits", "--input", str(tmp_path / "rows.npy"))
    assert wrong.returncode == 2 and "INVALID_ARGUMENT" in wrong.stderr and "[-1, 64]" in wrong.stderr
    missing = run_cli("predict", "--server", url, "--model", "nope", "--input", str(tmp_path / "rows.npy"))
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    adaptive = run_cli("predict", "--server", url, "--model", "digits", "--input", str(tmp_path / "rows.npy"),
                       "--tolerance", "0.01")  # fmt: skip
    assert adaptive.returncode == 2 and "gRPC" in adaptive.stderr
    down = run_cli("predict", "--server", "http://127.0.0.1:1", "--model", "digits", "--input",
                   str(tmp_path / "rows.npy"), "--timeout", "2")  # fmt: skip
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
    for output in (wrong, missing, adaptive, down):
        assert "Traceback" not in output.stderr


def test_table_and_json(address: str, digits_rows: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", digits_rows[:3])
    table = run_cli("predict", "--server", address, "--model", "digits", "--input", str(tmp_path / "rows.npy"),
                    "--samples", "50", "--seed", "1")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "digits v1 · monte_carlo · T=50 · seed 1" in table.stdout
    assert "mutual info" in table.stdout and "entropy (nats)" in table.stdout
    (tmp_path / "row.json").write_text(json.dumps(digits_rows[0].tolist()))
    result = run_cli("predict", "--server", address, "--model", "digits", "--input", str(tmp_path / "row.json"),
                     "--samples", "50", "--seed", "1", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["samples"] == 50 and len(answer["mean"]) == 1 and len(answer["mean"][0]) == 10
    assert answer["predicted_label"] == [str(answer["predicted_class"][0])]


def test_regression_table(address: str, tmp_path: Path) -> None:
    (tmp_path / "rows.json").write_text(json.dumps([[0.01] * 10, [-0.02] * 10]))
    result = run_cli("predict", "--server", address, "--model", "diabetes", "--input", str(tmp_path / "rows.json"))
    assert result.returncode == 0, result.stderr
    assert "95% interval of y" in result.stdout and "interval of mean" in result.stdout
    assert "epistemic only" not in result.stdout  # trained by mcdrop: tau is in the manifest


def test_errors_exit_with_a_message(address: str, tmp_path: Path) -> None:
    (tmp_path / "rows.json").write_text(json.dumps([[1.0, 2.0]]))
    cases = [
        (("--model", "digits", "--input", str(tmp_path / "missing.npy")), 2, "Input file not found"),
        (("--model", "nope", "--input", str(tmp_path / "rows.json")), 2, "NOT_FOUND: Model 'nope' is not loaded"),
        (("--model", "digits", "--input", str(tmp_path / "rows.json")), 2, "Expected [B, 64]. Received: [1, 2]"),
    ]
    for args, code, message in cases:
        result = run_cli("predict", "--server", address, *args)
        assert result.returncode == code, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    unreachable = run_cli("predict", "--server", "127.0.0.1:1", "--model", "digits", "--input",
                          str(tmp_path / "rows.json"), "--timeout", "2")  # fmt: skip
    assert unreachable.returncode == 1 and "UNAVAILABLE" in unreachable.stderr


def test_serve_refuses_a_missing_repository(tmp_path: Path) -> None:
    result = run_cli("serve", "--repository", str(tmp_path / "none"), "--port", "0")
    assert result.returncode == 2
    assert "Model repository not found" in result.stderr


def test_samples_zero_or_negative_is_a_usage_error(address: str, tmp_path: Path) -> None:
    (tmp_path / "row.json").write_text(json.dumps([0.0] * 64))
    for value in ("0", "-3"):
        result = run_cli("predict", "--server", address, "--model", "digits", "--input", str(tmp_path / "row.json"),
                         "--samples", value)  # fmt: skip
        assert result.returncode == 2, result.stdout
        assert result.stderr.strip().splitlines() == [
            f"mcdrop predict: error: argument --samples: expected an integer >= 1, received {int(value)} "
            "(see mcdrop predict --help)"
        ]


def test_input_from_a_pipe_and_from_stdin(address: str, digits_rows: np.ndarray, tmp_path: Path) -> None:
    rows = json.dumps(digits_rows[:2].tolist())
    common = ["--server", address, "--model", "digits", "--samples", "30", "--seed", "2", "--json"]
    stdin = subprocess.run(
        [sys.executable, "-m", "mcdrop.serving.cli", "predict", "--input", "-", *common],
        input=rows, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert stdin.returncode == 0, stdin.stderr
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(_npy_bytes(digits_rows[:2])))
    writer.start()
    piped = run_cli("predict", "--input", str(fifo), *common)
    writer.join(timeout=30)
    assert piped.returncode == 0, piped.stderr
    from_stdin, from_pipe = json.loads(stdin.stdout), json.loads(piped.stdout)
    assert from_stdin["mean"] == from_pipe["mean"] and len(from_pipe["mean"]) == 2


def test_unreadable_input_says_what_was_expected(address: str, tmp_path: Path) -> None:
    (tmp_path / "rows.txt").write_text("not json")
    result = run_cli("predict", "--server", address, "--model", "digits", "--input", str(tmp_path / "rows.txt"))
    assert result.returncode == 2
    assert "expected a .npy array, JSON rows or CSV rows of numbers" in result.stderr
    assert "Traceback" not in result.stderr


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
