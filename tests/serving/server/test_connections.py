"""Connections that end, so that clients spread again over restarted workers, and a client that retries UNAVAILABLE."""

from __future__ import annotations

import socket
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving.client import Client, RpcFailed
from mcdrop.serving.harness.process import free_port
from tests.helpers import in_process_server


def test_grpc_connections_end_after_their_age_and_calls_go_on(model_repository: Path, digits_rows: np.ndarray) -> None:
    with in_process_server(model_repository, max_connection_age_seconds=0.5, connection_age_grace_seconds=1) as (
        server, _):  # fmt: skip
        states: list[grpc.ChannelConnectivity] = []
        with Client(f"127.0.0.1:{server.port}") as client:
            client._channel.subscribe(states.append, try_to_connect=True)
            answers = 0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                client.predict("digits", digits_rows[:2], samples=5)
                answers += 1
    ready = states.count(grpc.ChannelConnectivity.READY)
    assert answers > 20 and ready >= 3, (answers, states)  # about one new connection every 0.5 s, no failed call


def test_rest_answers_close_connections_after_an_age_or_a_count(model_repository: Path) -> None:
    served = in_process_server(model_repository, http_port=free_port(), max_connection_requests=3,
                               max_connection_age_seconds=0.6)  # fmt: skip
    with served as (server, _), httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as http:
        closing = [http.get("/v2/health/ready").headers.get("connection") for _ in range(7)]
        assert closing == [None, None, "close", None, None, "close", None]
        time.sleep(0.7)
        assert http.get("/v2/health/ready").headers.get("connection") == "close"  # aged, not counted
        assert http.get("/v2/health/ready").headers.get("connection") is None  # a fresh connection
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as raw:  # the server really closes
            for _ in range(3):
                raw.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
        assert received.count(b"HTTP/1.1 200") == 3 and received.lower().count(b"connection: close") == 1


def test_the_client_retries_unavailable_and_not_other_codes() -> None:
    """The documented retry policy: UNAVAILABLE is retried (up to 4 attempts), INVALID_ARGUMENT is not."""
    attempts = {"ListModels": 0, "GetModelMetadata": 0}
    lock = threading.Lock()

    def handler(method: str, failures: int, code: grpc.StatusCode) -> Any:
        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            with lock:
                attempts[method] += 1
                if attempts[method] <= failures:
                    context.abort(code, "not yet")
            return pb.ListModelsResponse().SerializeToString()

        return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("mcdrop.v1.Inference", {
        "ListModels": handler("ListModels", 2, grpc.StatusCode.UNAVAILABLE),
        "GetModelMetadata": handler("GetModelMetadata", 1, grpc.StatusCode.INVALID_ARGUMENT)})])  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            assert client.list_models() == []
            assert attempts["ListModels"] == 3
            try:
                client.metadata("digits")
            except Exception as exc:  # noqa: BLE001 - the refusal is what is checked
                assert "INVALID_ARGUMENT" in str(exc)
            assert attempts["GetModelMetadata"] == 1
    finally:
        server.stop(0)


def test_a_broken_stream_resumes_exactly_with_its_reported_seed(
    model_repository: Path, digits_rows: np.ndarray
) -> None:
    """A stream cut with UNAVAILABLE after some estimates (a worker killed, a connection past its age and grace) cannot
    be retried by gRPC; the client replays it with the seed the first estimate reported and skips what it yielded.
    A proxy in front of a real server cuts the first two calls after 3 and 5 estimates, then one other code."""
    calls: list[pb.PredictRequest] = []
    cuts = {0: (3, grpc.StatusCode.UNAVAILABLE), 1: (5, grpc.StatusCode.UNAVAILABLE)}
    with in_process_server(model_repository) as (server, _):
        upstream = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        forward = upstream.unary_stream("/mcdrop.v1.Inference/PredictStream")

        def stream(request: bytes, context: grpc.ServicerContext) -> Any:
            calls.append(pb.PredictRequest.FromString(request))
            cut, code = cuts.get(len(calls) - 1, (None, None))
            for answered, response in enumerate(forward(request)):
                if answered == cut:
                    context.abort(code, "cut by the test")
                yield response

        proxy = grpc.server(futures.ThreadPoolExecutor(4))
        proxy.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "mcdrop.v1.Inference", {"PredictStream": grpc.unary_stream_rpc_method_handler(stream)})])  # fmt: skip
        port = proxy.add_insecure_port("127.0.0.1:0")
        proxy.start()
        try:
            with Client(f"127.0.0.1:{port}", timeout=30) as client:
                updates = list(client.predict_stream("digits", digits_rows[:4], samples=100, chunk=10))
                cuts[3] = (2, grpc.StatusCode.INTERNAL)  # not retried: only UNAVAILABLE means "try again"
                with pytest.raises(RpcFailed, match="INTERNAL"):
                    list(client.predict_stream("digits", digits_rows[:4], samples=100, chunk=10))
            replay = list(server_client_stream(server.port, digits_rows[:4], updates[0].seed))
        finally:
            proxy.stop(0)
            upstream.close()
    assert [u.samples for u in updates] == list(range(10, 101, 10))  # each estimate once, in order
    np.testing.assert_array_equal(np.stack([u.mean for u in updates]), np.stack([u.mean for u in replay]))
    assert not calls[0].HasField("seed") and calls[1].seed == calls[2].seed == updates[0].seed
    assert len(calls) == 4


def server_client_stream(port: int, x: np.ndarray, seed: int | None) -> list[Any]:
    with Client(f"127.0.0.1:{port}", timeout=30) as client:
        return list(client.predict_stream("digits", x, samples=100, chunk=10, seed=seed))
