"""The suite runs in two pytest-xdist worker processes (``make test``): what they share and how.

- Tests are scheduled by file (``--dist loadfile``), so a module's fixtures are built once. (xdist's
  ``loadgroup`` cannot group across files under pytest 9: it renames ``item._nodeid``, which pytest 9 no longer
  reads.)
- ``built_once`` builds a session fixture's files once for all workers: the first worker builds under a file lock,
  the others wait and read the same folder. Shared folders are read-only for tests (they copy before changing).
- ``exclusive`` holds a resource one worker at a time (a local Ray cluster).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["built_once", "exclusive"]


def _shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this run sees: the parent of the workers' own base folders."""
    shared = tmp_path_factory.getbasetemp().parent / "shared"
    shared.mkdir(exist_ok=True)
    return shared


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills, built once per test run however many workers ask for it.

    Without xdist it is built in this process's temporary folder. Under xdist, the first worker to take the lock
    builds, the others wait for it and reuse the result. A failed build leaves no folder behind, so every worker
    that asks fails the same way (it tries again).
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = _shared(tmp_path_factory)
    folder, done = shared / name, shared / f"{name}.done"
    with exclusive(tmp_path_factory, name):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                build(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            done.touch()
    return folder


@contextmanager
def exclusive(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[None]:
    """Hold ``name`` for one worker at a time (a no-op without xdist): the other waits until it is released."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    with (_shared(tmp_path_factory) / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield
