"""The serving image, built and run for real through the Docker Engine API."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.serving.client import Client
from mcdrop.serving.harness.process import free_port
from tests.container.images import build
from tests.helpers import COMMANDS, REPO, burst_then_signal


class Running:
    """A container of the image on the host network, its gRPC and metrics ports on free loopback ports."""

    def __init__(
        self,
        client: Any,
        image: Any,
        volumes: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
        **env: str,
    ) -> None:
        self.port, self.metrics_port, self.http_port = free_port(), free_port(), free_port()
        environment = {"MCDROP_HOST": "127.0.0.1", "MCDROP_PORT": str(self.port),
                       "MCDROP_HTTP_PORT": str(self.http_port), "MCDROP_METRICS_PORT": str(self.metrics_port),
                       **env}  # fmt: skip
        self.started = time.monotonic()
        self.container = client.containers.run(
            image.id, detach=True, network_mode="host", environment=environment, volumes=volumes or {}, **(run or {})
        )
        self.address = f"127.0.0.1:{self.port}"
        self.ready_seconds = self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> float:
        with Client(self.address, timeout=2) as client:
            while time.monotonic() - self.started < timeout:
                self.container.reload()
                assert self.container.status in ("created", "running"), self.logs()
                try:
                    if client.health(timeout=1) == "SERVING":
                        return time.monotonic() - self.started
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                time.sleep(0.05)
        raise AssertionError(f"container not ready in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return str(self.container.logs().decode(errors="replace"))

    def remove(self) -> None:
        with contextlib.suppress(Exception):  # already gone is fine
            self.container.remove(force=True)


@pytest.fixture(scope="module")
def running(docker_client: Any, image: Any, shared_repository: Path) -> Any:
    server = Running(docker_client, image, {str(shared_repository): {"bind": "/models", "mode": "ro"}})
    yield server
    server.remove()


def test_image_configuration(image: Any) -> None:
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mcdrop", "serve"]
    assert {"8500/tcp", "8501/tcp", "8502/tcp"} <= set(config["ExposedPorts"])
    assert "/models" in config["Volumes"]
    assert "MCDROP_REPOSITORY=/models" in config["Env"]


def test_serves_the_mounted_repository_to_both_clients(running: Any, digits_rows: np.ndarray, tmp_path: Path) -> None:
    with Client(running.address) as client:
        assert {m.name for m in client.list_models()} == {"digits", "diabetes"}
        native = client.predict("digits", digits_rows[:4], samples=100, seed=1234)
    np.save(tmp_path / "rows.npy", digits_rows[:4])
    probe = subprocess.run(
        [sys.executable, "-m", "tests.serving.probes.triton_probe", running.address, "digits",
         str(tmp_path / "rows.npy")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    answer = json.loads(probe.stdout)
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    triton_mean = np.frombuffer(base64.b64decode(answer["infer"]["mean"]["b64"]), np.float32).reshape(4, 10)
    assert triton_mean.tobytes() == native.mean.tobytes()
    assert answer["errors"]["short_raw_buffer"]["status"] == "StatusCode.INVALID_ARGUMENT"
    rest = f"http://127.0.0.1:{running.http_port}/v2/models/digits/infer"  # REST from the same container
    x = digits_rows[:4]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 64], "data": x.reshape(-1).tolist()}],
            "parameters": {"mc_samples": 100, "seed": 1234}, "outputs": [{"name": "mean"}]}  # fmt: skip
    request = urllib.request.Request(rest, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        mean = json.loads(response.read())["outputs"][0]
    assert np.asarray(mean["data"], np.float32).reshape(mean["shape"]).tobytes() == native.mean.tobytes()
    import tritonclient.http as triton_http  # Triton's HTTP client with every default: binary tensors both ways

    triton_client = triton_http.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    tensor = triton_http.InferInput("x", [4, 64], "FP32")
    tensor.set_data_from_numpy(x)
    result = triton_client.infer("digits", [tensor], parameters={"mc_samples": 100, "seed": 1234})
    assert result.as_numpy("mean").tobytes() == native.mean.tobytes()


def test_inside_the_container(running: Any) -> None:
    # The HEALTHCHECK reaches the container's config (podman reports it there, not on the image).
    healthcheck = running.container.attrs["Config"]["Healthcheck"]
    assert healthcheck["Test"] == ["CMD", "python3", "-m", "mcdrop.serving.server.healthcheck"]
    code, output = running.container.exec_run(["python3", "-m", "mcdrop.serving.server.healthcheck"])
    assert code == 0 and output.decode().strip() == "SERVING"
    code, output = running.container.exec_run(["id", "-u"])
    assert output.decode().strip() == "10001"
    check = "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)"
    assert running.container.exec_run(["python3", "-c", check])[0] == 0
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
    assert 'mcdrop_model_version_loaded{model="digits",version="1"} 1.0' in metrics


def test_the_serving_only_install_lists_every_command_and_answers_train_in_one_line(running: Any) -> None:
    code, output = running.container.exec_run(["mcdrop", "--help"])
    assert code == 0
    for command in COMMANDS:
        assert command in output.decode()
    for command in ("train", "export", "demo"):
        args = ["mcdrop", command] + (
            ["model.keras", "--repository", "r", "--name", "n"] if command == "export" else []
        )
        code, output = running.container.exec_run(args, demux=True)
        stderr = (output[1] or b"").decode().strip().splitlines()
        assert code == 2, stderr
        assert len(stderr) == 1 and "Install it with: pip install 'mcdrop[train]'" in stderr[0], stderr
    score = ["mcdrop", "score", "--repository", "r", "--model", "m", "--input", "i.parquet", "--output", "o.parquet"]
    code, output = running.container.exec_run(score, demux=True)  # the runtime image has no pyarrow, no Ray
    stderr = (output[1] or b"").decode().strip().splitlines()
    assert code == 2 and len(stderr) == 1 and "pip install 'mcdrop[score]'" in stderr[0], stderr
    code, output = running.container.exec_run(["mcdrop", "serve", "--capture-dir", "/tmp/rows"], demux=True)
    stderr = (output[1] or b"").decode().strip().splitlines()
    assert code == 2 and len(stderr) == 1 and "pip install 'mcdrop[capture]'" in stderr[-1], stderr
    code, output = running.container.exec_run(["mcdrop", "predict", "--help"])
    assert code == 0 and "--samples" in output.decode()
    code, output = running.container.exec_run(["mcdrop", "soak", "--help"])
    assert code == 0 and "--clients" in output.decode()


def test_sigterm_drains_in_flight_requests_and_exits_0(
    docker_client: Any, image: Any, shared_repository: Path, digits_rows: np.ndarray
) -> None:
    server = Running(docker_client, image, {str(shared_repository): {"bind": "/models", "mode": "ro"}},
                     MCDROP_GRACE_SECONDS="30", MCDROP_WORKERS="2")  # fmt: skip
    try:
        count = ("import os, pathlib; print(sum(b'multiprocessing.spawn' in p.read_bytes() for p in "
                 "pathlib.Path('/proc').glob('[0-9]*/cmdline') if p.parent.name != str(os.getpid())))")  # fmt: skip
        code, output = server.container.exec_run(["python3", "-c", count])
        assert code == 0 and output.decode().strip() == "2", output  # MCDROP_WORKERS=2: two server processes
        x = np.repeat(digits_rows, 8, axis=0)
        outcomes, signalled = burst_then_signal(server.address, x, 16, lambda: server.container.kill(signal="SIGTERM"))
        result = server.container.wait(timeout=60)
        assert result["StatusCode"] == 0, server.logs()
        assert len(outcomes) == 16 and {o for o, _ in outcomes} <= {"OK", "UNAVAILABLE"}
        assert any(o == "OK" and t > signalled for o, t in outcomes), "nothing was in flight at SIGTERM"
        assert server.logs().count('"msg": "stopped"') == 3  # both workers drained, then the supervisor
    finally:
        server.remove()


def test_model_baked_into_the_image(docker_client: Any, shared_repository: Path, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "Dockerfile", ".dockerignore"):
        shutil.copy(REPO / name, context / name)
    for package in ("pipeline", "serving"):
        shutil.copytree(REPO / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(shared_repository, context / "model-repository")
    baked, _ = build(docker_client, context, "mcdrop:test-baked", "with-models")
    server = Running(docker_client, baked)  # no volume: the models are in the image
    try:
        with Client(server.address) as client:
            assert {m.name for m in client.list_models()} == {"digits", "diabetes"}
            assert client.predict("digits", np.zeros((1, 64), np.float32), samples=10).samples == 10
    finally:
        server.remove()


def test_runs_as_the_deployment_runs_it_on_kserves_single_model_layout(
    docker_client: Any, image: Any, shared_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    """deploy/kubernetes and deploy/kserve's constraints: read-only root (+ tmpfs for the emptyDir), uid 10001,
    no capabilities, no new privileges, the manifest's memory limit, one model version at /mnt/models."""
    import yaml

    deployment = next(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text()))
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    memory = int(limits["memory"].removesuffix("Mi")) * 1024 * 1024
    single = tmp_path / "mnt-models"
    shutil.copytree(shared_repository / "digits" / "1", single)
    for path in [single, *single.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    run = {"read_only": True, "tmpfs": {"/tmp": "size=64m"}, "user": "10001:10001", "cap_drop": ["ALL"],
           "security_opt": ["no-new-privileges"], "mem_limit": memory}  # fmt: skip
    server = Running(docker_client, image, {str(single): {"bind": "/mnt/models", "mode": "ro"}}, run,
                     MCDROP_REPOSITORY="/mnt/models", MCDROP_MODEL_NAME="handwriting")  # fmt: skip
    try:
        with Client(server.address) as client:
            assert [m.name for m in client.list_models()] == ["handwriting"]
            native = client.predict("handwriting", digits_rows[:2], samples=50, seed=3)
        tensor = {"name": "x", "datatype": "FP32", "shape": [2, 64], "data": digits_rows[:2].reshape(-1).tolist()}
        body = {"inputs": [tensor], "parameters": {"mc_samples": 50, "seed": 3}, "outputs": [{"name": "mean"}]}
        url = f"http://127.0.0.1:{server.http_port}/v2/models/handwriting/infer"
        request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            mean = json.loads(response.read())["outputs"][0]
        assert np.asarray(mean["data"], np.float32).reshape(mean["shape"]).tobytes() == native.mean.tobytes()
        server.container.kill(signal="SIGTERM")
        assert server.container.wait(timeout=60)["StatusCode"] == 0, server.logs()
    finally:
        server.remove()
