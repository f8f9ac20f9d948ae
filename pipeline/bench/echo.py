"""A bare gRPC echo server: the transport floor for the server benchmarks.

    python -m mcdrop.pipeline.bench.echo PORT

It answers ``/echo.Echo/Echo`` with the request's own bytes, using the same
grpcio server, thread pool and options as ``mcdrop serve``, and no protobuf work.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc

METHOD = "/echo.Echo/Echo"


def serve(port: int, workers: int = 8) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("echo.Echo", {"Echo": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(timeout=0.2):  # a timeout lets the handler run when another thread got the signal
        pass
    server.stop(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
