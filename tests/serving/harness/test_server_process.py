"""The server as its own process: concurrency, hot reload, graceful SIGTERM, and no TensorFlow inside."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.client import Client, RpcFailed
from tests.helpers import REPO, burst_then_signal, copy_repository, server_process


@pytest.mark.slow
def test_sixteen_concurrent_clients_get_uncorrupted_answers(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    flags = ("--pool-size", "2", "--grpc-threads", "16")
    with server_process(model_repository, tmp_path / "server.log", *flags) as server:
        batches = [digits_rows[: 1 + s % 4] for s in range(10)]  # mixed batch sizes force re-allocations
        with Client(server.address) as client:
            reference = {s: client.predict("digits", batches[s], samples=30, seed=s).mean.tobytes() for s in range(10)}

        def worker(index: int) -> list[bool]:
            matches = []
            with Client(server.address) as client:  # each client its own channel
                for j in range(50):
                    s = (index * 50 + j) % 10
                    mean = client.predict("digits", batches[s], samples=30, seed=s).mean
                    matches.append(mean.tobytes() == reference[s])
            return matches

        with ThreadPoolExecutor(16) as pool:
            results = [m for ms in pool.map(worker, range(16)) for m in ms]
        assert len(results) == 800 and all(results)
        assert server.stop() == 0


def publish_copy(source: Path, model_dir: Path, version: int) -> None:
    """Copy a version aside and rename it into place, as an exporter would."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(model_dir / str(version))


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_new_versions_are_picked_up_and_broken_ones_do_not_replace_the_old(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    repo = copy_repository(model_repository, tmp_path / "repo")
    model_dir = repo / "digits"
    with server_process(repo, tmp_path / "server.log", "--poll-seconds", "0.2", "--max-versions", "3") as server:
        with Client(server.address) as client:
            assert client.predict("digits", digits_rows, samples=10).version == 1

            publish_copy(model_dir / "1", model_dir, 2)
            wait_for(lambda: client.predict("digits", digits_rows, samples=10).version == 2)

            publish_copy(model_dir / "1", model_dir, 3)  # then corrupt it: its digests no longer match
            corrupt = model_dir / "3" / "mc.tflite"
            corrupt.write_bytes(corrupt.read_bytes()[:1000])
            wait_for(lambda: 3 in {m.name: m for m in client.list_models()}["digits"].failed_versions)
            status = {m.name: m for m in client.list_models()}["digits"]
            assert status.versions == [1, 2] and status.latest == 2
            assert "sha256" in status.failed_versions[3]
            assert client.predict("digits", digits_rows, samples=10).version == 2  # old one keeps serving
            with pytest.raises(RpcFailed, match="failed to load"):
                client.predict("digits", digits_rows, version=3)

            shutil.rmtree(model_dir / "2")
            wait_for(lambda: {m.name: m for m in client.list_models()}["digits"].versions == [1])
            shutil.rmtree(repo / "diabetes")
            wait_for(lambda: "diabetes" not in {m.name for m in client.list_models()})
            with pytest.raises(RpcFailed) as info:
                client.predict("diabetes", np.zeros((1, 10), np.float32))
            assert info.value.code == "NOT_FOUND"
        assert "model version failed to load" in server.log.read_text()
        assert server.stop() == 0


@pytest.mark.slow
def test_sigterm_during_a_burst_finishes_accepted_requests_and_exits_0(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    server = server_process(model_repository, tmp_path / "server.log", "--grace-seconds", "30", "--pool-size", "2")
    with server:
        x = np.repeat(digits_rows, 8, axis=0)  # 64 rows x 4000 samples: ~0.1 s or more each
        outcomes, signalled = burst_then_signal(
            server.address, x, 24, lambda: server.process.send_signal(signal.SIGTERM)
        )
        code = server.process.wait(timeout=60)
    assert code == 0
    assert len(outcomes) == 24
    # Accepted requests all complete; only requests that arrive after shutdown began may be refused.
    assert {o for o, _ in outcomes} <= {"OK", "UNAVAILABLE"}
    finished_after_signal = [t for o, t in outcomes if o == "OK" and t > signalled]
    assert finished_after_signal, "no request was in flight at SIGTERM"
    log = server.log.read_text()
    assert '"msg": "signal received"' in log and '"msg": "stopped"' in log


def test_sigterm_with_rest_on_finishes_the_rest_request_in_flight_and_exits_0(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    import threading

    import httpx

    from mcdrop.serving.harness.process import free_port

    port, metrics_port = free_port(), free_port()
    server = server_process(model_repository, tmp_path / "server.log", "--grace-seconds", "30",
                            "--http-port", str(port), "--metrics-port", str(metrics_port))  # fmt: skip
    x = np.repeat(digits_rows, 8, axis=0)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}],
            "parameters": {"mc_samples": 4000}}  # fmt: skip
    answers: list[int] = []
    with server:
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200
        request = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"http://127.0.0.1:{port}/v2/models/digits/infer", json=body, timeout=60).status_code
            )
        )
        request.start()
        deadline = time.monotonic() + 30
        while "mcdrop_inflight_requests 1.0" not in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text:
            assert time.monotonic() < deadline, "the request never reached the data plane"
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        request.join(60)
        code = server.process.wait(timeout=60)
    assert code == 0 and answers == [200]


TGKILL_SYSCALL = {"x86_64": 234, "aarch64": 131}


def test_sigterm_delivered_to_a_worker_thread_still_stops_the_server(model_repository: Path, tmp_path: Path) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads (Kubernetes does not choose one)."""
    import ctypes
    import os
    import platform

    with server_process(model_repository, tmp_path / "server.log", "--http-port", "0") as server:
        workers = sorted(int(t) for t in os.listdir(f"/proc/{server.pid}/task") if int(t) != server.pid)
        assert workers, "the server runs no threads besides the main one"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(TGKILL_SYSCALL[platform.machine()], server.pid, workers[-1], signal.SIGTERM) == 0
        assert server.process.wait(timeout=20) == 0


SERVER_SCRIPT = """
import json, sys
import numpy as np
from mcdrop.serving.client import Client
from mcdrop.serving.server.server import Server
from mcdrop.serving.server.settings import ServerSettings

server = Server(ServerSettings(repository=sys.argv[1], host="127.0.0.1", port=0, metrics_port=0).validate())
port = server.start()
with Client(f"127.0.0.1:{port}") as client:
    x = np.zeros((2, 64), np.float32)
    client.predict("digits", x, mode="deterministic")
    client.predict("digits", x, samples=20)
    client.predict("digits", x, samples=20, seed=1)
    list(client.predict_stream("digits", x, samples=20))
    client.metadata("digits")
server.stop(0)
prefixes = ("tensorflow", "keras", "tf_keras", "jax", "torch")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in prefixes)))
"""


def test_server_process_never_imports_tensorflow(model_repository: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVER_SCRIPT, str(model_repository)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_mcdrop_serve_process_has_no_tensorflow_library_mapped(model_repository: Path, tmp_path: Path) -> None:
    with server_process(model_repository, tmp_path / "server.log") as server:
        with Client(server.address) as client:
            client.predict("digits", np.zeros((1, 64), np.float32), samples=10)
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "ai_edge_litert" in maps  # the runtime is there...
        assert "tensorflow" not in maps and "libtensorflow" not in maps  # ...TensorFlow is not
        assert server.stop() == 0


def test_settings_come_from_the_environment(model_repository: Path, tmp_path: Path) -> None:
    env = {"MCDROP_MAX_SAMPLES": "77", "MCDROP_LOG_FORMAT": "json"}
    with server_process(model_repository, tmp_path / "server.log", env=env) as server, Client(server.address) as client:
        with pytest.raises(RpcFailed, match="Expected 1 <= T <= 77"):
            client.predict("digits", np.zeros((1, 64), np.float32), samples=78)
        assert server.stop() == 0
