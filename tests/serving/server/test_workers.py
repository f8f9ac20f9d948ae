"""``mcdrop serve --workers N``: processes sharing the ports, aggregated metrics, drain, restart; and the lone-request
interpreter (idle cores for a request alone in flight)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from mcdrop.serving.client import Client, RpcFailed
from mcdrop.serving.harness.measure import cpu_seconds, worker_pids
from mcdrop.serving.harness.process import free_port
from tests.helpers import burst_then_signal, server_process


def cpu_ticks(pid: int) -> float:
    return cpu_seconds([pid])


def metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


@pytest.mark.slow
def test_two_workers_share_the_ports_answer_identically_count_together_and_drain_on_sigterm(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    http_port, metrics_port = free_port(), free_port()
    server = server_process(model_repository, tmp_path / "server.log", "--workers", "2", "--grace-seconds", "30",
                            "--http-port", str(http_port), "--metrics-port", str(metrics_port))  # fmt: skip
    with server:
        workers = worker_pids(server.pid, 2)
        assert len(workers) == 2
        with Client(server.address) as client:
            reference = client.predict("digits", digits_rows, samples=50, seed=7).mean.tobytes()
        before = {pid: cpu_ticks(pid) for pid in workers}

        def session(index: int) -> list[bool]:
            # Its own connection (gRPC shares one per target otherwise): the kernel spreads connections over workers.
            with Client(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                return [client.predict("digits", digits_rows, samples=50, seed=7).mean.tobytes() == reference
                        for _ in range(15)]  # fmt: skip

        with ThreadPoolExecutor(4) as pool:
            answers = [same for result in pool.map(session, range(40)) for same in result]
        assert len(answers) == 600 and all(answers)
        used = {pid: cpu_ticks(pid) - before[pid] for pid in workers}
        assert all(ticks > 0 for ticks in used.values()), f"a worker served nothing: CPU ticks {used}"

        rest = httpx.post(f"http://127.0.0.1:{http_port}/v2/models/digits/infer", timeout=30, json={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": list(digits_rows.shape),
                        "data": digits_rows.reshape(-1).tolist()}]})  # fmt: skip
        assert rest.status_code == 200
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        # One endpoint for both workers: every RPC counted once, whichever worker served it.
        assert metric(text, 'mcdrop_requests_total{api="mcdrop.v1",code="OK",method="Predict"}') == 601
        assert metric(text, 'mcdrop_model_version_loaded{model="digits",version="1"}') == 1.0

        x = np.repeat(digits_rows, 8, axis=0)  # heavy requests, so that some are in flight at SIGTERM
        outcomes, signalled = burst_then_signal(server.address, x, 12, lambda: server.process.send_signal(
            signal.SIGTERM))  # fmt: skip
        code = server.process.wait(timeout=90)
    assert code == 0
    assert {o for o, _ in outcomes} <= {"OK", "UNAVAILABLE"} and len(outcomes) == 12
    assert any(o == "OK" and t > signalled for o, t in outcomes), "no request was in flight at SIGTERM"
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived its supervisor"
    log = server.log.read_text()
    assert log.count('"msg": "stopped"') == 3  # both workers drained, then the supervisor


@pytest.mark.slow
def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    metrics_port = free_port()
    with server_process(model_repository, tmp_path / "server.log", "--workers", "2", "--metrics-port",
                        str(metrics_port)) as server:  # fmt: skip
        # Health answers SERVING as soon as one worker is up; a worker killed while the others still start stops
        # the whole server (by design: see the supervisor). Kill only once the supervisor says every worker serves.
        deadline = time.monotonic() + 120
        while '"msg": "serving", "workers"' not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = worker_pids(server.pid, 2)
        os.kill(first[0], signal.SIGKILL)
        served = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with Client(server.address, timeout=5, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                    client.predict("digits", digits_rows, samples=5)
                    served += 1
            except RpcFailed:
                pass  # a connection that reached the dead worker
            restarted = server.log.read_text().count('"msg": "serving", "port"') == 3  # 2 workers, then the new one
            if restarted and served >= 5:
                break
            time.sleep(0.05)
        replaced = worker_pids(server.pid, 2)
        assert len(replaced) == 2 and first[0] not in replaced and first[1] in replaced
        assert served >= 5
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
        assert b"mcdrop_worker_restarts_total 1.0" in scraped  # the dashboard's worker-restart panel
        assert server.stop() == 0
    assert '"msg": "worker died; restarting"' in server.log.read_text()


def test_a_port_held_by_another_program_fails_in_one_line(model_repository: Path, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mcdrop.serving.cli", "serve", "--repository", str(model_repository),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--http-port", "0", "--metrics-port", "-1"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1
    assert f"Could not bind 127.0.0.1:{port}" in lines[0]


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 4), ("150000 100000\n", 2), ("50000 100000\n", 1), ("800000 100000\n", 4), (None, 4)],
)
def test_usable_cpus_follow_the_affinity_and_the_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str | None, expected: int
) -> None:
    from mcdrop.serving.server import cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    monkeypatch.setattr(cpus, "CGROUP_CPU_MAX", path)
    assert cpus.usable_cpus() == expected
    assert cpus.resolve(0) == expected and cpus.resolve(3) == 3


def test_a_lone_large_request_uses_the_many_thread_interpreter_and_answers_bit_identically(
    model_repository: Path, digits_rows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcdrop.serving.core.requests import PredictionRequest
    from mcdrop.serving.models.repository import ModelRepository
    from mcdrop.serving.runtime.dataplane import LONE_REQUEST_FLOPS
    from mcdrop.serving.server.server import data_plane
    from mcdrop.serving.server.settings import ServerSettings

    settings = ServerSettings(repository=str(model_repository)).validate()
    planes = {}
    for threads in (1, 2):
        store = ModelRepository(model_repository, pool_size=1, lone_request_threads=threads)
        store.scan()
        planes[threads] = data_plane(store, settings)
    pool = planes[2].model("digits").pools["mc_masked"]
    with pool.lease(alone=True) as lone:  # created on first use
        assert lone is pool._lone and lone is not None
    with planes[1].model("digits").pools["mc_masked"].lease(alone=True) as single:
        assert single is not pool._lone and planes[1].model("digits").pools["mc_masked"]._lone is None
    used: list[int] = []
    original = lone.run
    monkeypatch.setattr(lone, "run", lambda feeds: used.append(len(feeds["x"])) or original(feeds))

    large = PredictionRequest(model="digits", x=digits_rows, samples=2000, seed=3)
    small = PredictionRequest(model="digits", x=digits_rows[:1], samples=10, seed=3)
    plan = planes[2].sampler.plan
    assert plan(large, planes[2].limits).flops >= LONE_REQUEST_FLOPS > plan(small, planes[2].limits).flops
    for request in (large, small):
        one, many = planes[1].predict(request), planes[2].predict(request)
        assert one.summary.mean.tobytes() == many.summary.mean.tobytes()
        assert one.summary.std.tobytes() == many.summary.std.tobytes()
    assert used == [len(digits_rows)]  # the large request only: a small one is not worth waking a thread

    with planes[2]._admitted():  # another request in flight: the cores are busy, one thread each
        planes[2].predict(large)
    assert used == [len(digits_rows)]


@pytest.mark.slow
def test_every_worker_picks_up_a_new_version(model_repository: Path, digits_rows: np.ndarray, tmp_path: Path) -> None:
    import shutil

    from tests.helpers import copy_repository

    repo = copy_repository(model_repository, tmp_path / "repo")
    flags = ("--workers", "2", "--poll-seconds", "0.2")
    with server_process(repo, tmp_path / "server.log", *flags) as server:
        workers = worker_pids(server.pid, 2)
        staging = repo / "digits" / ".staging-2"
        shutil.copytree(repo / "digits" / "1", staging)
        staging.rename(repo / "digits" / "2")
        before = {pid: cpu_ticks(pid) for pid in workers}
        deadline = time.monotonic() + 30
        versions: list[int] = []
        while time.monotonic() < deadline:
            versions = []
            for _ in range(20):  # new connections: the kernel spreads them over both workers
                with Client(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                    versions.append(client.predict("digits", digits_rows, samples=5).version)
            if set(versions) == {2}:
                break
            time.sleep(0.2)
        assert set(versions) == {2}, versions
        assert all(cpu_ticks(pid) > before[pid] for pid in workers), "a worker served none of the connections"
        assert server.stop() == 0
    log = server.log.read_text()
    assert log.count('"msg": "model version loaded", "model": "digits", "version": 2') == 2  # once per worker


@pytest.mark.slow
def test_two_workers_report_one_drift_psi_from_their_summed_windows(
    calibrated_repository: Path, calibration_files: dict[str, Path], tmp_path: Path
) -> None:
    """Each worker keeps its share of the drift window; the supervisor's /metrics sums the bins into one PSI."""
    metrics_port = free_port()
    digits = np.load(calibration_files["digits"])["x"][:360]  # the calibration rows: no drift by construction
    noise = np.random.default_rng(0).uniform(0, 16, (360, 64)).astype(np.float32)
    labels = '{model="digits",output="y",version="2"}'
    with server_process(calibrated_repository, tmp_path / "server.log", "--workers", "2", "--drift-window-rows", "400",
                        "--metrics-port", str(metrics_port)) as server:  # fmt: skip

        def send(x: np.ndarray, calls: int) -> None:
            def session(index: int) -> None:  # each call its own 36 rows, on its own connection (either worker)
                with Client(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                    client.predict("digits", x[index * 36 : (index + 1) * 36], samples=20, seed=index)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(session, range(calls)))

        def scrape() -> str:
            time.sleep(1.0)  # the workers publish their windows every 0.25 s
            return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text

        send(digits, 10)
        calm = scrape()
        send(noise, 10)
        shifted = scrape()
    rows = sum(metric(calm, f'mcdrop_drift_window_rows{{bin="{b}",model="digits",output="y",version="2"}}')
               for b in range(1, 11))  # fmt: skip
    assert 180 <= rows <= 360  # at most 200 rows per worker; 360 rows went to the two of them
    assert metric(calm, f"mcdrop_drift_psi{labels}") < 0.1
    assert metric(shifted, f"mcdrop_drift_psi{labels}") > 0.25
