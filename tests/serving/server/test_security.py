"""TLS, mutual TLS and bearer-token authentication, for both APIs, over real loopback gRPC."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc
from mcdrop.serving.client import Client, RpcFailed
from tests.certs import make_ca, make_leaf
from tests.helpers import in_process_server, run_cli

X = np.zeros((1, 64), np.float32)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "test-ca")
    rogue_ca = make_ca(folder, "rogue-ca")
    return {
        "ca": ca[0],
        "server": make_leaf(folder, "server", ca, server=True),
        "client": make_leaf(folder, "client", ca, server=False),
        "rogue_client": make_leaf(folder, "rogue-client", rogue_ca, server=False),
        "rogue_ca": rogue_ca[0],
    }


def tls_settings(pki: dict[str, Any], mutual: bool = False) -> dict[str, Any]:
    cert, key = pki["server"]
    return {"tls_cert": str(cert), "tls_key": str(key), "tls_client_ca": str(pki["ca"]) if mutual else ""}


def fails(client: Client) -> str:
    with pytest.raises(RpcFailed) as info:
        client.predict("digits", X, samples=5, timeout=3)
    return info.value.code


def test_tls_for_both_apis(model_repository: Path, pki: dict[str, Any]) -> None:
    with in_process_server(model_repository, **tls_settings(pki)) as (server, _):
        target = f"localhost:{server.port}"
        with Client(target, ca=pki["ca"]) as client:
            assert client.predict("digits", X, samples=5).samples == 5
        credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        with grpc.secure_channel(target, credentials) as channel:
            assert oip_grpc.GRPCInferenceServiceStub(channel).ServerReady(oip.ServerReadyRequest(), timeout=5).ready
        with Client(target, timeout=3) as plaintext:
            assert fails(plaintext) == "UNAVAILABLE"
        with Client(target, ca=pki["rogue_ca"]) as untrusting:
            assert fails(untrusting) == "UNAVAILABLE"


def test_mutual_tls_requires_a_trusted_client_certificate(model_repository: Path, pki: dict[str, Any]) -> None:
    with in_process_server(model_repository, **tls_settings(pki, mutual=True)) as (server, _):
        target = f"localhost:{server.port}"
        cert, key = pki["client"]
        with Client(target, ca=pki["ca"], cert=cert, key=key) as client:
            assert client.predict("digits", X, samples=5).samples == 5
        with Client(target, ca=pki["ca"]) as anonymous:
            assert fails(anonymous) == "UNAVAILABLE"
        rogue_cert, rogue_key = pki["rogue_client"]
        with Client(target, ca=pki["ca"], cert=rogue_cert, key=rogue_key) as rogue:
            assert fails(rogue) == "UNAVAILABLE"


def test_tokens_guard_every_api_but_health_and_reload_without_restart(model_repository: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotate me\nfirst-token\n", encoding="utf-8")
    with in_process_server(model_repository, auth_token_file=str(tokens), auth_tokens="env-token") as (server, _):
        target = f"127.0.0.1:{server.port}"
        with Client(target) as anonymous:
            assert anonymous.health() == "SERVING"  # probes stay open
            with pytest.raises(RpcFailed) as info:
                anonymous.predict("digits", X, samples=5)
            assert info.value.code == "UNAUTHENTICATED" and "Missing bearer token" in info.value.message
            for call in (anonymous.list_models, lambda: list(anonymous.predict_stream("digits", X, samples=20))):
                with pytest.raises(RpcFailed) as info:
                    call()
                assert info.value.code == "UNAUTHENTICATED"
        with grpc.insecure_channel(target) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.ServerLive(oip.ServerLiveRequest(), timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            live = stub.ServerLive(oip.ServerLiveRequest(), timeout=5, metadata=[("authorization", "Bearer env-token")])
            assert live.live
        with Client(target, token="wrong") as wrong, pytest.raises(RpcFailed, match="Invalid bearer token"):
            wrong.predict("digits", X, samples=5)
        with Client(target, token="first-token") as first, Client(target, token="env-token") as env:
            assert first.predict("digits", X, samples=5).samples == 5
            assert env.predict("digits", X, samples=5).samples == 5
            tokens.write_text("second-token\n", encoding="utf-8")  # rotate
            deadline = time.monotonic() + 10
            while True:
                try:
                    first.predict("digits", X, samples=5)
                except RpcFailed as exc:
                    assert exc.code == "UNAUTHENTICATED"
                    break
                assert time.monotonic() < deadline, "the old token still works after rotation"
                time.sleep(0.2)
        with Client(target, token="second-token") as second:
            assert second.predict("digits", X, samples=5).samples == 5
        assert server.metrics.auth_failures._value.get() >= 5


def test_predict_cli_with_tls_and_token(model_repository: Path, pki: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "token").write_text("cli-token\n", encoding="utf-8")
    np.save(tmp_path / "x.npy", X)
    with in_process_server(model_repository, auth_tokens="cli-token", **tls_settings(pki)) as (server, _):
        common = [
            "predict",
            "--server",
            f"localhost:{server.port}",
            "--model",
            "digits",
            "--input",
            str(tmp_path / "x.npy"),
            "--ca",
            str(pki["ca"]),
            "--json",
        ]
        ok = run_cli(*common, "--token-file", str(tmp_path / "token"))
        assert ok.returncode == 0, ok.stderr
        refused = run_cli(*common)
        assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr


def test_predict_cli_over_rest_with_tls_and_token(model_repository: Path, pki: dict[str, Any], tmp_path: Path) -> None:
    """``--server https://…``: the REST client verifies the server with --ca and sends the bearer token."""
    from mcdrop.serving.harness.process import free_port

    (tmp_path / "token").write_text("cli-token\n", encoding="utf-8")
    np.save(tmp_path / "x.npy", X)
    port = free_port()
    settings = {"auth_tokens": "cli-token", "http_port": port, **tls_settings(pki)}
    with in_process_server(model_repository, **settings):
        common = ["predict", "--server", f"https://localhost:{port}", "--model", "digits", "--input",
                  str(tmp_path / "x.npy"), "--json", "--seed", "3"]  # fmt: skip
        ok = run_cli(*common, "--ca", str(pki["ca"]), "--token-file", str(tmp_path / "token"))
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["seed"] == 3
        refused = run_cli(*common, "--ca", str(pki["ca"]))
        assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr and "Traceback" not in refused.stderr
        unverified = run_cli(*common, "--token-file", str(tmp_path / "token"))  # the system roots do not know the CA
        assert unverified.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr


def test_tls_settings_are_checked() -> None:
    from mcdrop.serving.errors import InvalidArgument
    from mcdrop.serving.server.settings import ServerSettings

    with pytest.raises(InvalidArgument, match="tls_cert and tls_key go together"):
        ServerSettings(tls_cert="a.pem").validate()
    with pytest.raises(InvalidArgument, match="needs tls_cert"):
        ServerSettings(tls_client_ca="ca.pem").validate()


def test_rest_serves_the_same_tls_and_mutual_tls(model_repository: Path, pki: dict[str, Any]) -> None:
    """REST shares the gRPC side's certificates: TLS verified by the CA, client certificates required with mTLS."""
    import ssl

    import httpx

    from mcdrop.serving.harness.process import free_port

    port = free_port()
    with in_process_server(model_repository, http_port=port, **tls_settings(pki, mutual=True)):
        url = f"https://localhost:{port}/v2/models/digits"
        client_cert = tuple(str(p) for p in pki["client"])
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        context.load_cert_chain(*client_cert)
        assert httpx.get(url, verify=context).json()["name"] == "digits"
        with pytest.raises(httpx.HTTPError):  # no client certificate
            httpx.get(url, verify=ssl.create_default_context(cafile=str(pki["ca"])))
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://localhost:{port}/v2/models/digits")
