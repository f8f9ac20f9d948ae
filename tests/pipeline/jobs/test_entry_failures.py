"""One failing entry never stops a batch job: whatever it raises, it is reported in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("keras")

from mcdrop.pipeline.export import exporter
from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.jobs.batch import Job, run_entry


@pytest.fixture
def job(tmp_path: Path) -> Job:
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: export is replaced in these tests")
    return Job(path=tmp_path / "job.toml", repository=tmp_path / "repo", workdir=tmp_path / "work", entries=[])


@pytest.mark.parametrize(
    ("raised", "detail"),
    [
        (ExportError(""), "ExportError"),  # str(exc).splitlines()[0] raised IndexError here
        (ExportError("first\nsecond"), "first"),
        (RuntimeError(), "internal error: RuntimeError: (no message)"),
        (RuntimeError("boom\nmore"), "internal error: RuntimeError: boom"),
    ],
)
def test_a_failing_entry_is_reported_in_one_line(
    job: Job, monkeypatch: pytest.MonkeyPatch, raised: Exception, detail: str
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(exporter, "export", fail)
    result = run_entry(job, {"name": "m", "model": "m.keras"})
    assert result.status == "failed"
    assert result.detail.startswith(detail) and "\n" not in result.detail
