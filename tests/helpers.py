"""Helpers shared by the test suites: the CLI as a user runs it, servers in-process and in their own process."""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mcdrop.serving.client import Client, RpcFailed
from mcdrop.serving.harness.process import ServerProcess
from mcdrop.serving.server.server import Server
from mcdrop.serving.server.settings import ServerSettings

COMMANDS = (
    "train",
    "export",
    "export-batch",
    "export-web",
    "serve",
    "predict",
    "score",
    "evaluate",
    "bench",
    "soak",
    "demo",
)
"""Every ``mcdrop`` subcommand, as the entry points in pyproject.toml declare them."""
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``mcdrop ARGS`` in a fresh interpreter and capture its output."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI quiets TensorFlow itself
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "mcdrop.serving.cli", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@contextlib.contextmanager
def in_process_server(repository: Path, **settings: object) -> Iterator[tuple[Server, Client]]:
    options: dict[str, object] = {"repository": str(repository), "host": "127.0.0.1", "port": 0, "http_port": 0,
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


def server_process(repository: Path, log: Path, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
    """``mcdrop serve`` in its own process (see ``mcdrop.serving.harness.process``), logging to ``log``."""
    return ServerProcess(repository, *flags, log=log, env=env, cwd=REPO)


def burst_then_signal(
    address: str, x: np.ndarray, clients: int, send_signal: Callable[[], None]
) -> tuple[list[tuple[str, float]], float]:
    """Start ``clients`` heavy requests, call ``send_signal`` while they run, wait for them all.

    Returns each outcome ("OK" or a status code name) with its finish time, and the signal time
    (``time.monotonic()``), so a test can tell which requests were in flight at the signal.
    """
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()

    def call() -> None:
        with Client(address, timeout=60) as client:
            try:
                client.predict("digits", x, samples=4000, seed=1)
                outcome = "OK"
            except RpcFailed as exc:
                outcome = exc.code
        with lock:
            outcomes.append((outcome, time.monotonic()))

    threads = [threading.Thread(target=call) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the burst is in flight
    signalled = time.monotonic()
    send_signal()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes, signalled


def parse_python(path: Path) -> ast.Module:
    """``ast.parse`` of a source file, robust to CPython 3.11's spurious "AST constructor recursion depth mismatch"
    (cpython#106905: an error inside the AST constructor leaves its depth counter off, and the SystemError hides the
    real cause). Seen once in a full suite run, after Ray and gRPC threads had run in the process: the file is then
    parsed again on a fresh thread, whose interpreter state is clean; a real syntax error still raises."""
    source = path.read_text(encoding="utf-8")
    try:
        return ast.parse(source, filename=str(path))
    except SystemError as exc:
        if "recursion depth mismatch" not in str(exc):
            raise
    with concurrent.futures.ThreadPoolExecutor(1) as fresh:
        return fresh.submit(ast.parse, source, str(path)).result()


@contextlib.contextmanager
def small_filesystem(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path``, read-only if asked: a real full (ENOSPC) or read-only (EROFS) filesystem
    (this suite runs as root, as CI does)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
