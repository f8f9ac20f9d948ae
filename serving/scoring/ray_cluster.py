"""Connect to Ray for one job: the cluster at an address, or a local Ray; shut down only what we started."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

from mcdrop.serving.errors import MissingExtra

__all__ = ["connected"]


@contextlib.contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """``ray``, initialised for the block: the cluster at ``address``, a local Ray for ``""``, or the
    connection the caller already made (left open)."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtra("--ray needs Ray. Install it with: pip install 'mcdrop[ray]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()
