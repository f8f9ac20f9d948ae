"""The REST transport's plumbing: sockets that answer without Nagle delays, and JSON that loses no number."""

from __future__ import annotations

import http.client
import json
import math
import statistics
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcdrop.serving.harness.process import free_port
from mcdrop.serving.rest.codec import dump_json
from mcdrop.serving.rest.http_server import HttpServer


async def _echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type="application/octet-stream")


@pytest.mark.parametrize("reuse_port", [False, True], ids=["one-process", "workers-shared-port"])
def test_small_posts_on_a_kept_alive_connection_answer_in_milliseconds(reuse_port: bool) -> None:
    """http.client writes headers and body separately, as many clients do. A listening socket without TCP_NODELAY
    on its connections answers each such request after the client's delayed ACK: 40 ms on Linux, which the
    ``--workers`` socket did (1.4 → 44 ms per request) before it said IPPROTO_TCP."""
    server = HttpServer(Starlette(routes=[Route("/echo", _echo, methods=["POST"])]), "127.0.0.1", free_port(), 1.0,
                        None, reuse_port=reuse_port)  # fmt: skip
    port = server.start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        times = []
        for i in range(30):
            body = json.dumps({"i": i, "data": list(range(200))}).encode()
            started = time.perf_counter()
            connection.request("POST", "/echo", body, {"content-type": "application/json"})
            response = connection.getresponse()
            assert response.read() == body and response.status == 200
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
        server.stop(1.0)
    assert statistics.median(times) < 0.015, f"median {statistics.median(times) * 1e3:.1f} ms per request"


def test_answers_keep_non_finite_numbers_and_nulls_as_the_standard_library_writes_them() -> None:
    content = {"outputs": [{"data": [0.1, -2.5e-8, 1e300, 7]}], "id": "é", "parameters": {"note": None}}
    assert json.loads(dump_json(content)) == content  # the fast path: same values
    extreme = {"data": [math.nan, math.inf, -math.inf, 1.5], "parameters": None}
    text = dump_json(extreme).decode()
    assert text == '{"data":[NaN,Infinity,-Infinity,1.5],"parameters":null}'  # not null for NaN
