"""Running ``mcdrop serve`` as a child process on loopback: a free port, the command, waiting until SERVING.

Used by the demo, the benchmark and the soak command (and the tests), which all need a real server
process beside them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from serving.client import Client
from serving.errors import MCDropError


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(repository: Path, port: int, *extra: str) -> list[str]:
    """``mcdrop serve`` on 127.0.0.1:``port`` without a metrics endpoint, plus ``extra`` flags."""
    return [
        sys.executable, "-m", "serving.cli", "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", "-1", *extra,
    ]  # fmt: skip


def wait_serving(address: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Return once the server's health service says SERVING.

    Raises:
        MCDropError: the process exited, or the server was not ready within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with Client(address, timeout=1) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise MCDropError(f"the server exited with code {process.returncode}")
            try:
                if client.health(timeout=0.5) == "SERVING":
                    return
            except MCDropError:
                pass
            time.sleep(0.02)
    raise MCDropError(f"the server at {address} was not ready within {timeout} s")
