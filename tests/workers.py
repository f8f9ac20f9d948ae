"""The suite runs in two pytest-xdist worker processes (``make test``): what they share and how.

- Tests are scheduled by group (``--dist loadgroup``): each test file is a group, so module fixtures are built once;
  ``GROUPS_BY_FOLDER`` keeps a folder's files together where they share a package fixture (Ray's cluster) or an
  expensive session fixture (the device graphs).
- ``built_once`` builds a session fixture's files once for all workers: the first worker builds under a file lock,
  the others wait and read the same folder. Shared folders are read-only for tests (they copy before changing).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["GROUPS_BY_FOLDER", "built_once", "group_of"]

GROUPS_BY_FOLDER = ("tests/ray", "tests/device")
"""Folders whose files run in one worker: one Ray cluster (a package fixture), one set of device graphs."""


def group_of(item: pytest.Item) -> str:
    """The xdist group of a test: its folder's if listed in ``GROUPS_BY_FOLDER``, else its file's."""
    path = item.nodeid.split("::", 1)[0]
    return next((folder for folder in GROUPS_BY_FOLDER if path.startswith(folder + "/")), path)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills, built once per test run however many workers ask for it.

    Without xdist it is built in this process's temporary folder. Under xdist, the workers share their base
    folder's parent: the first to take the lock builds, the others wait for it and reuse the result. A failed
    build leaves no folder behind, so every worker that asks fails the same way (it tries again).
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent / "shared"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
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
