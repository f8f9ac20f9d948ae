"""The layout is part of the contract: roles in folders, layers that only import downwards, a curated surface.

``lint-imports`` (in ``test_lint``) keeps the contracts of ``pyproject.toml``; here the layers contract is shown
able to fail, on a copy of the real tree with one upward import added.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO

SCRIPTS = Path(sys.executable).parent
PACKAGES = ("serving", "pipeline")


def _layers_contract() -> dict[str, object]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["type"] == "layers" and c.get("containers") == ["mcdrop.serving"])


def _lint_copy(tmp_path: Path, contract: dict[str, object]) -> subprocess.CompletedProcess[str]:
    layers = ", ".join(f'"{layer}"' for layer in contract["layers"])  # type: ignore[attr-defined]
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = mcdrop.serving\n\n[importlinter:contract:layers]\n"
        f"name = {contract['name']}\ntype = layers\ncontainers = mcdrop.serving\n"
        f"layers =\n" + "".join(f"    {layer.strip()}\n" for layer in layers.replace('"', "").split(", ")),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "tree")}
    return subprocess.run(
        [str(SCRIPTS / "lint-imports"), "--config", str(config), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_layers_contract_fails_on_an_upward_import(tmp_path: Path) -> None:
    contract = _layers_contract()
    assert contract["layers"][0] == "cli" and contract["layers"][-1] == "errors"  # type: ignore[index]
    tree = tmp_path / "tree" / "mcdrop" / "serving"
    shutil.copytree(REPO / "serving", tree, ignore=shutil.ignore_patterns("__pycache__"))
    kept = _lint_copy(tmp_path, contract)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "1 kept, 0 broken" in kept.stdout

    sampler = tree / "core" / "sampler.py"  # the prediction core reaching up into the server process
    sampler.write_text(sampler.read_text() + "\nfrom mcdrop.serving.server import settings  # noqa\n")
    broken = _lint_copy(tmp_path, contract)
    assert broken.returncode != 0
    assert "0 kept, 1 broken" in broken.stdout
    assert "mcdrop.serving.core.sampler -> mcdrop.serving.server.settings" in broken.stdout


def _modules(folder: str) -> list[Path]:
    return [p for p in (REPO / folder).rglob("*.py") if "_proto" not in p.parts and p.name != "__main__.py"]


def test_every_module_declares_its_public_names() -> None:
    """Private by default: every module says what it offers (``__all__``), or is private by name."""
    missing = []
    for path in _modules("serving"):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        declares = any(
            isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for node in tree.body
        )
        has_code = any(isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Assign) for node in tree.body)
        if has_code and not declares:
            missing.append(str(path.relative_to(REPO)))
    assert missing == []


def test_no_module_imports_another_modules_private_names() -> None:
    """Names outside a module's ``__all__`` (or with a leading underscore) stay inside it (tests may look)."""
    public: dict[str, set[str] | None] = {}
    for folder in PACKAGES:
        for path in _modules(folder):
            module = "mcdrop." + ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            names = None
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
                ):
                    names = set(ast.literal_eval(node.value))
            public[module] = names
    offenders = []
    for folder in PACKAGES:
        for path in _modules(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.ImportFrom) and node.module in public):
                    continue
                declared = public[node.module]
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}" in public
                    dunder = alias.name.startswith("__") and alias.name.endswith("__")
                    hidden = alias.name.startswith("_") and not dunder
                    private = hidden or (declared is not None and alias.name not in declared)
                    if private and not submodule:
                        offenders.append(f"{path.relative_to(REPO)}: {node.module}.{alias.name}")
    assert offenders == []


def test_manifest_data_is_read_through_its_type() -> None:
    """No string-key access to manifest data outside ``mcdrop.serving.models.manifest``."""
    pattern = re.compile(r"\bmanifest(_io)?\s*\[|\bmanifest\.get\(|manifest_io\.")
    owner = REPO / "serving" / "models" / "manifest.py"
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for folder in PACKAGES
        for path in _modules(folder)
        if path != owner
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("role", ["core", "models", "protocols", "runtime", "grpc", "rest", "server", "client",
                                  "scoring", "cli", "harness"])  # fmt: skip
def test_each_role_is_a_folder_with_a_docstring(role: str) -> None:
    """The folders the README's architecture section names exist, each saying what it is for."""
    init = REPO / "serving" / role / "__init__.py"
    assert init.is_file()
    assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"serving/{role}/__init__.py"
