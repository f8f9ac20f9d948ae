"""Batch entries carry ``mcdrop export --calibration-data`` and its settings; wrong ones are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcdrop.pipeline.jobs.batch import Job, _calibration
from mcdrop.serving.core.scores import Score
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.calibration import TargetKind


def _job(tmp_path: Path) -> Job:
    return Job(tmp_path / "job.toml", tmp_path / "repo", tmp_path / "work", [])


def test_an_entry_without_calibration_data_has_none(tmp_path: Path) -> None:
    assert _calibration(_job(tmp_path), {"name": "m"}) is None


def test_calibration_settings_are_read_relative_to_the_job_file(tmp_path: Path) -> None:
    entry: dict[str, Any] = {
        "name": "m",
        "calibration_data": "held.csv",
        "target": ["label"],
        "abstain_target": "risk=0.02",
        "abstain_delta": 0.1,
        "abstain_score": "least_confidence",
    }
    options = _calibration(_job(tmp_path), entry)
    assert options is not None
    assert options.data == tmp_path / "held.csv" and options.target == "label"  # the training target's column
    assert options.abstain_target is not None and options.abstain_target.kind == TargetKind.RISK
    assert (options.abstain_target.value, options.abstain_target.delta) == (0.02, 0.1)
    assert options.abstain_score == Score.LEAST_CONFIDENCE
    entry["calibration_target"] = "y_true"
    again = _calibration(_job(tmp_path), entry)
    assert again is not None and again.target == "y_true"


@pytest.mark.parametrize(("entry", "message"), [
    ({"abstain_target": "risk=0.02"}, "abstain_target in entry 'm' need calibration data"),
    ({"calibration_data": 3}, "calibration_data in entry 'm' must be text. Received: [3]"),
    ({"calibration_data": "a.npz", "abstain_target": "risk=2"}, "Expected a value in (0, 1)"),
    ({"calibration_data": "a.npz", "abstain_target": "precision=0.9"}, "Expected risk=R or coverage=C"),
    ({"calibration_data": "a.npz", "abstain_score": "entropy"}, "Unknown abstain_score 'entropy'"),
    ({"calibration_data": "a.npz", "abstain_delta": "0.05"}, "abstain_delta must be a number"),
])  # fmt: skip
def test_wrong_calibration_settings_are_refused_by_name(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        _calibration(_job(tmp_path), {"name": "m", **entry})
    assert message in str(refused.value)
