"""Atomic publication of a model version into a repository.

An export writes into ``REPO/NAME/.staging-<pid>-<random>/`` (invisible to
servers, which only see integer directories), flushes every file to disk, and
renames the directory to the next free version number. ``rename`` is atomic on
POSIX, so a version appears complete or not at all; a crash leaves only a
staging directory, which the next export removes once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from mcdrop.serving.errors import WriteFailed, describe_os_error
from mcdrop.serving.models.layout import STAGING_PREFIX, check_model_name, versions

__all__ = ["create_staging", "discard", "publish", "remove_stale_staging", "staged"]


@contextlib.contextmanager
def staged(repository: Path, name: str, what: str) -> Iterator[Path]:
    """A staging directory for ``what`` (e.g. "the export of 'digits'") that is removed unless the block published
    it; a failed file operation (ENOSPC, EROFS, …) becomes one ``WriteFailed`` line saying nothing was published.

    Raises:
        WriteFailed: the staging directory could not be created or written.
    """
    try:
        staging = create_staging(repository, name)
    except OSError as exc:
        raise WriteFailed(f"Cannot create {what} in {repository}: {describe_os_error(exc)}; nothing was "
                          "published.") from None  # fmt: skip
    try:
        yield staging
    except OSError as exc:
        discard(staging)  # gives back what was written, so a full disk is left as it was found
        raise WriteFailed(f"Cannot write {what} into {repository}: {describe_os_error(exc)}; nothing was published "
                          "and the staging directory was removed.") from None  # fmt: skip
    except BaseException:
        discard(staging)
        raise


def create_staging(repository: Path, name: str) -> Path:
    """A fresh, empty staging directory for model ``name``; stale ones of dead exports are removed."""
    model_dir = repository / check_model_name(name)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_dir)
    staging = model_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def publish(staging: Path) -> int:
    """Flush ``staging`` to disk and rename it to the next version number; return that number."""
    for file in staging.iterdir():
        _fsync(file)
    _fsync(staging)
    model_dir = staging.parent
    version = (versions(model_dir) or [0])[-1] + 1
    while True:
        target = model_dir / str(version)
        try:
            # mkdir-free rename: fails if another exporter took this number first.
            if target.exists():
                raise FileExistsError(target)
            staging.rename(target)
        except (FileExistsError, OSError) as exc:
            if not target.exists():
                raise exc
            version += 1
            continue
        _fsync(model_dir)
        return version


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(model_dir: Path) -> None:
    for child in model_dir.glob(f"{STAGING_PREFIX}*"):
        pid_text = child.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(child, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    with contextlib.suppress(OSError):
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
