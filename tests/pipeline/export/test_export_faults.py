"""An export that cannot write: a full or read-only repository gives one line, publishes nothing, leaves nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli, small_filesystem


@pytest.mark.parametrize(
    ("size", "read_only", "code"),
    [("128k", False, "ENOSPC"), ("1m", True, "EROFS")],  # the digits export writes about 280 KiB
)
def test_an_export_into_a_full_or_read_only_repository_publishes_nothing(
    model_repository: Path, tmp_path: Path, size: str, read_only: bool, code: str
) -> None:
    model = model_repository.parent / "digits" / "model.keras"
    with small_filesystem(tmp_path / "repo", size, read_only) as repo:
        result = run_cli("export", str(model), "--repository", str(repo), "--name", "digits", "--quiet")
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("mcdrop export: error: Cannot ") and f"({code})" in lines[0], lines[0]
        assert "nothing was published" in lines[0]
        leftovers = [p.relative_to(repo) for p in repo.rglob("*")]
        assert leftovers in ([], [Path("digits")]), leftovers  # no version, no staging directory
        assert shutil.disk_usage(repo).used < 16 * 1024  # every byte the export wrote was given back
