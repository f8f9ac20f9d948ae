"""Fixtures of the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcdrop.serving.client import Client
from mcdrop.serving.server.server import Server
from tests.helpers import in_process_server


@pytest.fixture(scope="module")
def served(model_repository: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Server, Client]]:
    """An in-process server on the test repository and a client; a module's ``SERVER_SETTINGS`` dict, if it has
    one, overrides settings (e.g. tighter limits)."""
    settings = getattr(request.module, "SERVER_SETTINGS", {})
    with in_process_server(model_repository, **settings) as pair:
        yield pair
