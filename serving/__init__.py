"""mcdrop serving: Monte-Carlo-dropout inference over gRPC and REST on the LiteRT runtime.

Nothing under this package imports TensorFlow; the serving image ships without it. A folder per role,
each importing only the roles below it (the layers contract in ``pyproject.toml``)::

    cli/        the mcdrop command line
    harness/    drives a server from outside (child process, measuring, soak); the server never imports it
    server/     one server process: settings, wiring, the --workers supervisor, logs, container probe
    grpc/ rest/ client/    the transports' thin adapters, and the Python client
    runtime/ scoring/      the server's data plane (limits, admission, load), metrics, tokens; batch scoring
    protocols/  what the APIs say (OIP and mcdrop.v1 facts, outputs, tensors), without a transport
    core/       the sampler: plan, masks, invokes, uncertainty
    models/     the typed manifest, the repository, LiteRT graphs, interpreter pools, footprints, masks
    errors.py   the one error tree
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

__version__ = metadata.version("mcdrop")
"""One source: ``pyproject.toml``'s version, as installed."""
