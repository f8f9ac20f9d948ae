"""Style, types and architecture are part of the suite.

ruff and mypy (strict) stay clean; ``lint-imports`` keeps the import contracts in ``pyproject.toml``
(the serving runtime never imports the pipeline; no import cycles among either package's modules);
every import uses the installed name ``mcdrop.…``; nothing reads outside the repository at run time.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, parse_python

SCRIPTS = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
        [str(SCRIPTS / "lint-imports"), "--no-cache"],
    ],
    ids=["ruff-check", "ruff-format", "mypy", "import-contracts"],
)
def test_clean(command: list[str]) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (REPO / folder).rglob("*.py") if "_proto" not in p.parts]


def test_every_import_uses_the_installed_name() -> None:
    """``import serving…`` would work from the repository root but not from an installed wheel."""
    offenders = []
    for path in _sources("pipeline", "serving", "tests", "protos"):
        for node in ast.walk(parse_python(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("pipeline", "serving")]
    assert offenders == []


def test_nothing_reaches_outside_the_repository() -> None:
    """The runtime packages carry what they need: no ``../shared`` (or any ``shared/`` data) at run time."""
    pattern = re.compile(r"\.\./shared|shared/(datasets|container|[A-Z-]+\.md)")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _sources("pipeline", "serving")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
