"""``mcdrop serve`` as a child process on loopback: a free port, waiting until SERVING, SIGTERM, the exit code.

One helper for everything that needs a real server process beside it: the demo, the
benchmark, the soak command and the tests::

    with ServerProcess(repository, "--pool-size", "2", log=Path("server.log")) as server:
        Client(server.address).predict(...)
        exit_code = server.stop()       # SIGTERM, then wait; 0 after a graceful drain
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from mcdrop.serving.client import Client
from mcdrop.serving.errors import MCDropError

__all__ = ["ServerProcess", "free_port"]

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(repository: Path, port: int, *flags: str) -> list[str]:
    """``mcdrop serve`` on 127.0.0.1:``port`` with one worker process and without metrics or REST endpoints
    (unless ``flags`` say otherwise: a later flag wins), so that several can run side by side."""
    return [
        sys.executable, "-m", "mcdrop.serving.cli", "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", "-1", "--http-port", "0", "--workers", "1", *flags,
    ]  # fmt: skip


class ServerProcess:
    """``mcdrop serve`` on 127.0.0.1 and a free port, its output in ``log`` (or discarded).

    Use it as a context manager: entering waits until the health service says SERVING, leaving
    stops the server (SIGTERM, then SIGKILL if it does not exit in time).
    """

    def __init__(
        self,
        repository: Path,
        *flags: str,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = log
        self.started = time.monotonic()
        output = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                serve_command(repository, self.port, *flags),
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        finally:
            if log is not None:
                output.close()  # type: ignore[union-attr]

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_serving(self, timeout: float = STARTUP_TIMEOUT) -> float:
        """Wait until the server's health service says SERVING; return the seconds since the process started.

        Raises:
            MCDropError: the process exited, or was not ready within ``timeout`` seconds (with the log's tail).
        """
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise MCDropError(f"the server exited with code {self.process.returncode}{self._log_tail()}")
                try:
                    if client.health(timeout=0.5) == "SERVING":
                        return time.monotonic() - self.started
                except MCDropError:
                    pass  # not listening yet
                time.sleep(0.02)
        raise MCDropError(f"the server at {self.address} was not ready within {timeout:g} s{self._log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (the server drains in-flight requests), wait, and return the exit code (0 after a graceful
        stop); a server still running after ``timeout`` seconds is killed (exit code -9)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            return self.process.returncode

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_serving()
        except BaseException:
            self._kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=30)

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def _log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return "; its log ends with:\n" + "\n".join(tail)
