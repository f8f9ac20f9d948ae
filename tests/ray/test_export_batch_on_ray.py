"""``mcdrop export-batch --ray ADDRESS``: entries as tasks across nodes, failures reported, a rerun skips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli

ray = pytest.importorskip("ray")
keras = pytest.importorskip("keras")


def test_three_entries_across_nodes_one_failing_then_rerun_skips(cluster: Any, tmp_path: Path) -> None:
    from tests.pipeline.export import models

    models.sequential_mlp(tmp_path / "a.keras")
    models.regression_with_skip(tmp_path / "b.keras")
    job = tmp_path / "job.toml"
    job.write_text(
        'repository = "repo"\ncpus_per_entry = 1\n'
        '[[entry]]\nname = "a"\nmodel = "a.keras"\n'
        '[[entry]]\nname = "broken"\nmodel = "missing.keras"\n'
        '[[entry]]\nname = "b"\nmodel = "b.keras"\n',
        encoding="utf-8",
    )
    first = run_cli("export-batch", str(job), "--ray", cluster.address, "--json")
    assert first.returncode == 1, first.stderr  # one entry failed
    results = {r["name"]: r for r in json.loads(first.stdout)}
    assert [r["name"] for r in json.loads(first.stdout)] == ["a", "broken", "b"]  # job order, whatever finished first
    assert results["a"]["status"] == results["b"]["status"] == "exported"
    assert results["broken"]["status"] == "failed" and "missing.keras" in results["broken"]["detail"]
    assert len({r["node"] for r in results.values()}) >= 2  # the entries ran on more than one node
    for name in ("a", "b"):
        manifest = json.loads((tmp_path / "repo" / name / "1" / "manifest.json").read_text())
        assert manifest["verification"]["passed"] is True
    again = run_cli("export-batch", str(job), "--ray", cluster.address, "--json")
    assert again.returncode == 1
    statuses = {r["name"]: r["status"] for r in json.loads(again.stdout)}
    assert statuses == {"a": "skipped", "broken": "failed", "b": "skipped"}
    assert not (tmp_path / "repo" / "a" / "2").exists()


@pytest.mark.parametrize("command", ["export-batch", "score"])
def test_without_the_ray_extra_the_flag_says_how_to_install_it(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from mcdrop.serving.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    job = tmp_path / "job.toml"
    job.write_text('[[entry]]\nname = "a"\nmodel = "a.keras"\n', encoding="utf-8")
    args = {"export-batch": [str(job)], "score": ["--repository", str(tmp_path), "--model", "m", "--input",
            str(job), "--output", str(tmp_path / "o.parquet")]}[command]  # fmt: skip
    assert main([command, *args, "--ray"]) == 2
    assert "pip install 'mcdrop[ray]'" in capfd.readouterr().err
