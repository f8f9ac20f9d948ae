"""``mcdrop calibrate``: a calibrated copy of a published version, published as the model's next version.

Published versions never change (a server may be serving them, clients may have pinned them): the graphs are
copied unchanged (their sha256 checked on the way) with a manifest that adds the ``calibration`` section.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
from pathlib import Path

from mcdrop.serving.calibration.calibrate import CalibrationOptions, Progress, calibrate
from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models import publish
from mcdrop.serving.models.layout import versions
from mcdrop.serving.models.manifest import Manifest, read_verified

__all__ = ["calibrate_version", "parse_version_path"]


def parse_version_path(text: str) -> tuple[Path, str, int | None]:
    """``REPO/NAME/VERSION`` or ``REPO/NAME`` (the newest version) → repository, name, version."""
    path = Path(text)
    if path.name.isdigit():
        return path.parent.parent, path.parent.name, int(path.name)
    return path.parent, path.name, None


def calibrate_version(
    repository: Path, name: str, version: int | None, options: CalibrationOptions,
    progress: Progress = lambda done, total: None,
) -> tuple[int, int, Manifest]:  # fmt: skip
    """Calibrate ``name`` (``version``, default the newest) and publish the result; return (source version, new
    version, new manifest). Nothing is published when anything fails."""
    model_dir = repository / name
    found = versions(model_dir) if model_dir.is_dir() else []
    if not found:
        raise NotFound(f"No versions of model {name!r} in {repository}. Expected REPO/NAME[/VERSION] of an export.")
    source_version = version if version is not None else found[-1]
    if source_version not in found:
        raise NotFound(f"Model {name!r} has no version {source_version} in {repository}. Versions: {found}.")
    source = model_dir / str(source_version)
    manifest = Manifest.load(source)
    if manifest.version is not None:
        raise InvalidArgument(f"{source} is a single-model (KServe) layout. Expected a version of a repository.")
    # Staged first: a repository that cannot be written is said before minutes of predictions, not after.
    with publish.staged(repository, name, f"the calibrated version of {name!r}") as staging:
        calibration = calibrate(source, manifest, options, progress)
        calibration = dataclasses.replace(calibration, base_version=source_version)
        for file in manifest.files:
            read_verified(source, file, manifest)  # never copy a file that no longer matches its digest
            shutil.copy2(source / file, staging / file)
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        calibrated = dataclasses.replace(manifest, calibration=calibration, created=created)
        calibrated.write(staging)
        new_version = publish.publish(staging)
    return source_version, new_version, calibrated
