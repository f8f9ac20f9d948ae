"""Container fixtures, through the Docker Engine API (the ``docker`` SDK).

Where no engine is reachable the container tests skip, saying why, unless
``MCDROP_REQUIRE_CONTAINER_TESTS=1`` (set by ``.ci/run``), where they fail instead:
CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.images import build
from tests.helpers import REPO

IMAGE = "mcdrop:test"
REQUIRED = os.environ.get("MCDROP_REQUIRE_CONTAINER_TESTS") == "1"


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine here"
        reason = f"no container engine reachable ({type(exc).__name__}: {exc}); set DOCKER_HOST or start Docker"
        if REQUIRED:
            pytest.fail(f"container tests are required here but {reason}")
        pytest.skip(reason)
    return client


@pytest.fixture(scope="session")
def image(docker_client: Any) -> Iterator[Any]:
    built, _ = build(docker_client, REPO, IMAGE, "runtime")
    yield built


@pytest.fixture(scope="session")
def shared_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the test repository that the image's non-root user (uid 10001) can read."""
    target = tmp_path_factory.mktemp("container") / "repo"
    shutil.copytree(model_repository, target)
    for path in [target.parent, target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target
