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
def address(model_repository: Path) -> Iterator[str]:
    with in_process_server(model_repository) as (server, _):
        yield f"127.0.0.1:{server.port}"


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
