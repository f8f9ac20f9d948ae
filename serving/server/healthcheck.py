"""Container health probe: exit 0 if the local server's gRPC health service says SERVING, else 1.

    python -m mcdrop.serving.server.healthcheck [--service NAME] [--timeout SECONDS]

Reads the port from the same settings as the server (``MCDROP_PORT``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mcdrop.serving.server.settings import load_settings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--service", default="", help="service to ask about ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    settings = load_settings({})
    target = f"localhost:{settings.port}"
    try:
        if settings.tls_cert:
            # The probe trusts the server's own certificate (which must name localhost) and, under mutual TLS,
            # presents it as its client identity too.
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(settings.tls_cert).read_bytes(),
                private_key=Path(settings.tls_key).read_bytes() if settings.tls_client_ca else None,
                certificate_chain=Path(settings.tls_cert).read_bytes() if settings.tls_client_ca else None,
            )
            channel = grpc.secure_channel(target, credentials)
        else:
            channel = grpc.insecure_channel(target)
        with channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: cannot read a TLS file: {exc}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
