"""The on-disk layout of a model repository, shared by the exporter and the server.

    REPO/
      NAME/                 a model; NAME matches MODEL_NAME
        1/ 2/ ...           versions: positive integers, the highest is the latest
        .staging-*/         an export in progress: invisible to servers

Only directories whose name is a positive integer are versions, so a version
appears the instant its directory is renamed into place, complete.
"""

from __future__ import annotations

import re
from pathlib import Path

from mcdrop.serving.errors import InvalidArgument

__all__ = ["MODEL_NAME", "STAGING_PREFIX", "check_model_name", "versions"]

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STAGING_PREFIX = ".staging-"


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise InvalidArgument(
            f"Invalid model name {name!r}. Expected 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def versions(model_dir: Path) -> list[int]:
    """Published versions of a model, ascending."""
    if not model_dir.is_dir():
        return []
    found = []
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0 and child.name == str(int(child.name)):
            found.append(int(child.name))
    return sorted(found)
