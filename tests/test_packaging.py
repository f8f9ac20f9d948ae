"""The wheel claims one import name, ``mcdrop``, and carries every module of both packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import COMMANDS, REPO


def _top_level_names(site_packages: Path) -> set[str]:
    return {p.name.removesuffix(".py") for p in site_packages.iterdir() if not p.name.endswith((".dist-info", ".pth"))}


@pytest.mark.slow
def test_the_wheel_adds_only_mcdrop_to_a_clean_venv(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("mcdrop-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    before = _top_level_names(site_packages)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps",
         str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    assert _top_level_names(site_packages) - before == {"mcdrop"}
    assert not (site_packages / "mcdrop" / "__init__.py").exists()  # a namespace: mcdrop.pipeline, mcdrop.serving

    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.endswith(".py")}
        data = {name for name in archive.namelist() if name.endswith(".txt") and "/uci_data/" in name}
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        commands = archive.read(entry_points).decode()
    for folder in ("pipeline", "serving"):
        for source in (REPO / folder).rglob("*.py"):
            assert f"mcdrop/{source.relative_to(REPO).as_posix()}" in packaged, source
    bundled = list((REPO / "pipeline" / "evaluation" / "uci_data").rglob("*.txt"))
    assert len(bundled) > 200 and {f"mcdrop/{p.relative_to(REPO).as_posix()}" for p in bundled} == data
    assert "[mcdrop.commands]" in commands and "mcdrop = mcdrop.serving.cli:main" in commands
    for command in COMMANDS:
        assert f"\n{command} = mcdrop." in commands, command
