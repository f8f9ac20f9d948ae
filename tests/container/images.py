"""Building images through the Docker Engine API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def build(client: Any, context: Path, tag: str, target: str) -> tuple[Any, float]:
    """Build ``target`` of the Dockerfile in ``context``; return the image and the seconds it took."""
    started = time.monotonic()
    image, _ = client.images.build(
        path=str(context), tag=tag, target=target, network_mode="host", rm=True, forcerm=True
    )
    return image, time.monotonic() - started
