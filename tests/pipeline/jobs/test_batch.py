"""export-batch as a user runs it: one broken entry, partial success, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcdrop.serving.models import manifest as manifest_io
from mcdrop.serving.models.layout import versions
from tests.helpers import run_cli

JOB = """
repository = "repo"

[defaults]
epochs = 2
hidden = [16]
dropout = [0.2]
seed = 1

[[entry]]
name = "digits-small"
dataset = "digits"
device_shapes = ["B=1,T=4"]

[[entry]]
name = "broken"
dataset = "csv:missing.csv"
target = ["y"]

[[entry]]
name = "digits-cv"
dataset = "digits"
select = { dropout = [[0.1], [0.5]], folds = 2 }
moments = false
"""


@pytest.mark.slow
def test_three_entries_one_broken_then_resume(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    job = tmp_path / "job.toml"
    job.write_text(JOB, encoding="utf-8")

    first = run_cli("export-batch", str(job), "--json")
    assert first.returncode == 1, first.stderr
    results = {r["name"]: r for r in json.loads(first.stdout)}
    assert {n: r["status"] for n, r in results.items()} == {
        "digits-small": "exported",
        "broken": "failed",
        "digits-cv": "exported",
    }
    assert "Data file not found" in results["broken"]["detail"]
    assert str(tmp_path / "missing.csv") in results["broken"]["detail"]  # resolved next to the job file
    assert versions(tmp_path / "repo" / "digits-small") == [1]
    small = manifest_io.Manifest.load(tmp_path / "repo" / "digits-small" / "1")
    assert {(d.graph, d.batch, d.samples) for d in small.device_graphs} == {
        ("mc_summary", None, None), ("deterministic", 1, None), ("mc", 1, 4), ("mc_masked", 1, 4),
        ("mc_summary", 1, 4)}  # fmt: skip
    assert small.moments is not None and small.moments.available  # by default
    cv = manifest_io.Manifest.load(tmp_path / "repo" / "digits-cv" / "1").to_json()
    assert "moments" not in cv  # moments = false
    selection = cv["source"]["selection"]
    assert [r["candidate"] for r in selection["results"]] == [{"dropout": [0.1]}, {"dropout": [0.5]}]
    assert all(len(r["fold_scores"]) == 2 for r in selection["results"])
    assert selection["best"] == results["digits-cv"]["selected"]
    assert [d["rate"] for d in cv["dropout_layers"]] == [pytest.approx(selection["best"]["dropout"][0])]

    again = run_cli("export-batch", str(job), "--json")
    assert again.returncode == 1
    statuses = {r["name"]: (r["status"], r["version"]) for r in json.loads(again.stdout)}
    assert statuses == {"digits-small": ("skipped", 1), "broken": ("failed", None), "digits-cv": ("skipped", 1)}
    assert versions(tmp_path / "repo" / "digits-small") == [1]  # nothing exported twice


def test_table_output_and_bad_job_file(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text('repository = "repo"\n', encoding="utf-8")
    result = run_cli("export-batch", str(job))
    assert result.returncode == 2
    assert "has no [[entry]] tables" in result.stderr and "Traceback" not in result.stderr


def test_an_entry_imports_its_custom_layers(tmp_path: Path) -> None:
    """``import = [...]`` per entry: without it the entry fails with the hint, with it the entry exports."""
    pytest.importorskip("keras")
    from tests.pipeline.export import custom_layers

    custom_layers.model_with(custom_layers.DropoutBlock(4, 0.3, name="block"), tmp_path / "custom.keras")
    layers_file = tmp_path / "my_layers.py"
    layers_file.write_text(Path(custom_layers.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    job = tmp_path / "job.toml"
    job.write_text(
        'repository = "repo"\n'
        '[[entry]]\nname = "without"\nmodel = "custom.keras"\n'
        '[[entry]]\nname = "with"\nmodel = "custom.keras"\nimport = ["my_layers.py"]\n',
        encoding="utf-8",
    )
    result = run_cli("export-batch", str(job), "--json", "--quiet")
    assert result.returncode == 1, result.stderr  # one entry failed
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["without"]["status"] == "failed" and "--import MODULE_OR_FILE" in entries["without"]["detail"]
    assert entries["with"]["status"] == "exported" and entries["with"]["version"] == 1
    manifest = json.loads((tmp_path / "repo" / "with" / "1" / "manifest.json").read_text())
    assert [d["class"] for d in manifest["dropout_layers"]] == ["Dropout"]
