"""``mcdrop serve``: serve a model repository over gRPC. Flags are generated from ``ServerSettings``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from mcdrop.serving.errors import NotFound
from mcdrop.serving.server.settings import ServerSettings, add_arguments, load_settings

__all__ = ["register"]


def register(subcommands: Any) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="serve a model repository over gRPC with Monte-Carlo-dropout uncertainty",
        description="Serve REPO/NAME/VERSION/ over gRPC (mcdrop.v1 API, Open Inference Protocol, health, "
        "reflection) with Prometheus metrics. Every setting can also come from an MCDROP_<NAME> environment "
        "variable; flags win.",
    )
    add_arguments(serve)
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from mcdrop.serving.server import cpus, logs
    from mcdrop.serving.server import supervisor as workers
    from mcdrop.serving.server.server import check_capture_installed, run

    names = [field.name for field in dataclasses.fields(ServerSettings)]
    settings = load_settings({name: getattr(args, name) for name in names if hasattr(args, name)})
    if not Path(settings.repository).is_dir():
        raise NotFound(f"Model repository not found: {settings.repository}. Expected a directory (REPO/NAME/VERSION/).")
    if settings.capture_dir:
        check_capture_installed()
    logs.configure(settings.log_level, settings.log_format)
    count = cpus.resolve(settings.workers)
    if count > 1:  # N processes on the shared ports, under this one
        return workers.Supervisor(settings, count).run()
    return run(settings)
