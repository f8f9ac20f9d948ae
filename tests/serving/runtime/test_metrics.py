"""Prometheus metrics over HTTP, and structured JSON logs."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.client import RpcFailed
from mcdrop.serving.server import logs
from tests.helpers import in_process_server


def test_metrics_endpoint_counts_requests_by_code(model_repository: Path) -> None:
    with in_process_server(model_repository, metrics_port=0) as (server, client):
        x = np.zeros((2, 64), np.float32)
        client.predict("digits", x, samples=20)
        client.predict("digits", x, mode="deterministic")
        with pytest.raises(RpcFailed):
            client.predict("nope", x)
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    # Server.stop() (leaving the block) closes the metrics endpoint too: its port is free again.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.metrics_port), timeout=2).close()
    with socket.socket() as sock:  # no listener left: binding works (SO_REUSEADDR only skips TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.metrics_port))
    assert 'mcdrop_requests_total{api="mcdrop.v1",code="OK",method="Predict"} 2.0' in text
    assert 'mcdrop_requests_total{api="mcdrop.v1",code="NOT_FOUND",method="Predict"} 1.0' in text
    assert 'mcdrop_model_version_loaded{model="digits",version="1"} 1.0' in text
    assert 'mcdrop_samples_per_request_count{mode="monte_carlo",model="digits"} 1.0' in text
    assert 'mcdrop_queue_seconds_count{model="digits"} 2.0' in text
    assert 'mcdrop_compute_seconds_bucket{le="+Inf",mode="deterministic",model="digits"} 1.0' in text


def test_json_log_lines_carry_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("mcdrop.test").info("model version loaded", extra={"model": "m", "version": 3})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "model version loaded" and line["model"] == "m" and line["version"] == 3
    assert line["level"] == "INFO" and line["ts"].endswith("Z")
    logging.getLogger().handlers.clear()
