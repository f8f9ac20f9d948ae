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

from tests.helpers import REPO, parse_python

SCRIPTS = Path(sys.executable).parent
PACKAGES = ("serving", "pipeline")


def _layers_contract(container: str = "mcdrop.serving") -> dict[str, object]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["type"] == "layers" and c.get("containers") == [container])


def _lint_copy(tmp_path: Path, contract: dict[str, object]) -> subprocess.CompletedProcess[str]:
    container = contract["containers"][0]  # type: ignore[index]
    root = ".".join(container.split(".")[:2])
    config = tmp_path / "contracts.ini"
    config.write_text(
        f"[importlinter]\nroot_package = {root}\n\n[importlinter:contract:layers]\n"
        f"name = {contract['name']}\ntype = layers\ncontainers = {container}\n"
        f"layers =\n" + "".join(f"    {layer}\n" for layer in contract["layers"]),  # type: ignore[attr-defined]
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "tree")}
    return subprocess.run(
        [str(SCRIPTS / "lint-imports"), "--config", str(config), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_layers_contract_fails_on_an_upward_import(tmp_path: Path) -> None:
    contract = _layers_contract()
    assert contract["layers"][0] == "cli" and contract["layers"][-1] == "errors | common"  # type: ignore[index]
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


@pytest.mark.parametrize(
    ("container", "module", "upward"),
    [
        # the training stage reaching up into the export stage
        ("mcdrop.pipeline", "training/loop.py", "from mcdrop.pipeline.export import exporter  # noqa"),
        # a graph rewrite reaching up into the export's steps
        (
            "mcdrop.pipeline.export",
            "export/graphs/summary.py",
            "from mcdrop.pipeline.export.stages import server  # noqa",
        ),
    ],
)
def test_the_pipeline_layers_contracts_fail_on_an_upward_import(
    tmp_path: Path, container: str, module: str, upward: str
) -> None:
    contract = _layers_contract(container)
    tree = tmp_path / "tree" / "mcdrop"
    # both packages: the pipeline imports serving's model contract; only the pipeline is checked
    shutil.copytree(REPO / "pipeline", tree / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*_data"))
    shutil.copytree(REPO / "serving", tree / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    kept = _lint_copy(tmp_path, contract)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "1 kept, 0 broken" in kept.stdout

    target = tree / "pipeline" / module
    target.write_text(target.read_text() + f"\n{upward}\n")
    broken = _lint_copy(tmp_path, contract)
    assert broken.returncode != 0
    assert "0 kept, 1 broken" in broken.stdout
    importer = "mcdrop.pipeline." + module.removesuffix(".py").replace("/", ".")
    assert importer in broken.stdout


def _modules(folder: str) -> list[Path]:
    return [p for p in (REPO / folder).rglob("*.py") if "_proto" not in p.parts and p.name != "__main__.py"]


def test_every_module_declares_its_public_names() -> None:
    """Private by default: every module says what it offers (``__all__``), or is private by name."""
    missing = []
    for path in _modules("serving"):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        tree = parse_python(path)
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
            for node in parse_python(path).body:
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
                ):
                    names = set(ast.literal_eval(node.value))
            public[module] = names
    offenders = []
    for folder in PACKAGES:
        for path in _modules(folder):
            for node in ast.walk(parse_python(path)):
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


PROTO_READERS = ("mcdrop.serving.grpc", "mcdrop.serving.protocols", "mcdrop.serving.client")
"""The protocol adapters and the client: the only readers of the generated protobuf code (``serving/_proto``)."""


def _private_owner(module: str) -> str | None:
    """The package that owns ``module``'s first private part (``mcdrop.serving`` for ``mcdrop.serving._proto.x``)."""
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def test_no_module_imports_another_packages_private_modules() -> None:
    """A private module (``_proto``, ``client._grpc``) is imported only inside the package that owns it; the
    generated protobuf code only by the protocol adapters and the client."""
    offenders = []
    for folder in PACKAGES:
        for path in (REPO / folder).rglob("*.py"):
            if "_proto" in path.parts:
                continue
            importer = "mcdrop." + ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(parse_python(path)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for module in modules:
                    owner = _private_owner(module)
                    if owner is None or not owner.startswith("mcdrop"):
                        continue
                    allowed = PROTO_READERS if ".serving._proto" in module else (owner,)
                    if not importer.startswith(allowed):
                        offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert sorted(set(offenders)) == []


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


def test_every_folder_says_what_it_holds() -> None:
    """Every package folder's ``__init__.py`` has a docstring (the Architecture page links to them)."""
    data = {"_proto", "uci_data", "static"}  # generated code and package data
    inits = [init for folder in PACKAGES for init in (REPO / folder).rglob("__init__.py")]
    folders = [init.parent for init in inits if not data & set(init.parts)]
    assert len(folders) >= 25
    silent = [str(f.relative_to(REPO)) for f in folders
              if not ast.get_docstring(parse_python(f / "__init__.py"))]  # fmt: skip
    assert silent == []


@pytest.mark.parametrize("role", ["serving/" + r for r in ("core", "models", "protocols", "runtime", "grpc", "rest",
                                                            "server", "client", "scoring", "cli", "harness", "common",
                                                            "calibration")]
                         + ["pipeline/" + r for r in ("cli", "bench", "evaluation", "web", "jobs", "export", "training",
                                                      "shared", "export/model", "export/graphs", "export/convert",
                                                      "export/verify", "export/stages")])  # fmt: skip
def test_each_role_is_a_folder_with_a_docstring(role: str) -> None:
    """The folders the Architecture page names exist, each saying what it is for."""
    init = REPO / role / "__init__.py"
    assert init.is_file()
    assert ast.get_docstring(parse_python(init)), f"{role}/__init__.py"
