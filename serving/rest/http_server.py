"""Serve the REST app with uvicorn from a thread of the server process: one process, one data plane."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any

import uvicorn

from mcdrop.serving.errors import Unavailable

__all__ = ["HttpServer", "reuse_port_socket"]


class HttpServer:
    """uvicorn in a background thread; ``stop`` lets in-flight requests finish within the grace period."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        grace: float,
        tls: tuple[str, str, str] | None,
        *,
        reuse_port: bool = False,
    ) -> None:
        """``reuse_port``: bind with SO_REUSEPORT, so that every worker of ``mcdrop serve --workers N`` listens on
        the same port and the kernel spreads connections over them."""
        options: dict[str, Any] = {}
        if tls is not None:
            cert, key, client_ca = tls
            options = {"ssl_certfile": cert, "ssl_keyfile": key}
            if client_ca:
                options |= {"ssl_ca_certs": client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        # httptools and uvloop named, not "auto": a missing one is an import error at start, never a silent
        # fallback to the pure-Python h11 parser and asyncio loop (measured slower per request).
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                                http="httptools", loop="uvloop", timeout_graceful_shutdown=max(1, round(grace)),
                                **options)  # fmt: skip
        self._server = uvicorn.Server(config)
        self.address = f"{host}:{port}"
        sockets = [reuse_port_socket(host, port)] if reuse_port else None
        self._thread = threading.Thread(target=self._server.run, args=(sockets,), name="rest", daemon=True)

    def start(self, timeout: float = 10.0) -> int:
        """Start serving; return the bound port."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise Unavailable(
                    f"Could not serve REST on {self.address}: the port is taken or the address is not local."
                )
            time.sleep(0.01)
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def stop(self, grace: float) -> None:
        self._server.should_exit = True
        self._thread.join(grace + 5)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT (not yet listening).

    Raises:
        Unavailable: the port is held by a socket that does not share it, or the address is not local.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio's loop sets TCP_NODELAY on accepted connections only when the listening
    # socket's proto says TCP; with proto 0 every answer waited out the client's 40 ms delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"Could not bind {host}:{port}: {exc.strerror or exc}.") from None
    return sock
