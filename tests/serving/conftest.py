"""Fixtures for serving tests: small exported models, servers in-process and in separate processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.client import Client
from serving.server import Server
from serving.settings import ServerSettings
from tests.conftest import REPO

pytest.importorskip("keras")  # building the fixtures' models needs the train extra


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with ``digits`` (classifier, v1) and ``diabetes`` (regressor, v1), trained briefly."""
    from pipeline.config import TrainConfig
    from pipeline.export.exporter import ExportOptions, export
    from pipeline.training import train

    root = tmp_path_factory.mktemp("models")
    repo = root / "repo"
    for name, dataset, epochs in (("digits", "digits", 15), ("diabetes", "diabetes", 20)):
        out = root / name
        train(TrainConfig(out=str(out), dataset=dataset, hidden=[64, 64], dropout=[0.2, 0.5], epochs=epochs,
                          seed=1, quiet=True).validate())  # fmt: skip
        export(ExportOptions(model_path=out / "model.keras", repository=repo, name=name))
    return repo


@pytest.fixture(scope="session")
def digits_rows() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[:8].astype(np.float32)


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@contextlib.contextmanager
def in_process_server(repository: Path, **settings: object) -> Iterator[tuple[Server, Client]]:
    options: dict[str, object] = {"repository": str(repository), "host": "127.0.0.1", "port": 0,
                                  "metrics_port": -1, "poll_seconds": 0, "grace_seconds": 2}  # fmt: skip
    options.update(settings)
    server = Server(ServerSettings(**options).validate())  # type: ignore[arg-type]
    port = server.start()
    client = Client(f"127.0.0.1:{port}", timeout=30)
    try:
        yield server, client
    finally:
        client.close()
        server.stop(grace=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``mcdrop serve`` in its own process, logging to a file."""

    def __init__(self, repository: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = log
        command = [sys.executable, "-m", "serving.cli", "serve", "--repository", str(repository), "--host",
                   "127.0.0.1", "--port", str(self.port), "--metrics-port", "-1", *args]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.address = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=2) as client:
            while True:
                assert self.process.poll() is None, f"server exited early:\n{self.log.read_text()}"
                try:
                    if client.health() == "SERVING":
                        return
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                assert time.monotonic() < deadline, f"server not ready:\n{self.log.read_text()}"
                time.sleep(0.1)

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
