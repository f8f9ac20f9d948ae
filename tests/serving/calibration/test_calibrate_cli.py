"""``mcdrop calibrate`` and ``mcdrop export --calibration-data``: a calibrated version is published next to the old
one, and bad calibration input is one clear error naming the numbers, exit 2, with nothing published."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.cli import main
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.layout import versions
from mcdrop.serving.models.manifest import Manifest


@pytest.fixture
def repository(model_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(model_repository, copy)
    return copy


def _digits(calibration_files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(calibration_files["digits"])
    return data["x"], data["y"]


def test_calibrate_publishes_a_new_version_with_the_same_graphs(
    repository: Path, calibration_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["calibrate", str(repository / "digits" / "1"), "--data", str(calibration_files["digits"]),
                 "--abstain-target", "coverage=0.8", "--json"])  # fmt: skip
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["source_version"], record["version"]) == (1, 2)
    old, new = Manifest.load(repository / "digits" / "1"), Manifest.load(repository / "digits" / "2")
    assert new.files == old.files and old.calibration is None
    assert new.calibration is not None and new.calibration.base_version == 1
    assert new.calibration.rows == len(_digits(calibration_files)[1])
    assert Manifest.from_json(new.to_json()) == new  # the section survives a round trip


def test_a_csv_with_a_named_label_column_calibrates(
    repository: Path, calibration_files: dict[str, Path], tmp_path: Path
) -> None:
    x, y = _digits(calibration_files)
    table = tmp_path / "rows.csv"
    header = ",".join(f"pixel_{i // 8}_{i % 8}" for i in range(64)) + ",digit"
    np.savetxt(table, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%g")
    manifest = Manifest.load(repository / "digits" / "1")
    if manifest.input.feature_names is not None:  # the columns the model was trained on
        header = ",".join(manifest.input.feature_names) + ",digit"
        np.savetxt(table, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%g")
    assert main(["calibrate", str(repository / "digits"), "--data", str(table), "--target", "digit", "--quiet"]) == 0
    calibrated = Manifest.load(repository / "digits" / "2").calibration
    assert calibrated is not None and calibrated.target is None and calibrated.outputs[0].score is None


def _write(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "rows.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", ["no labels", "unknown column", "unknown labels", "too few rows for the risk",
                                  "unreachable risk", "too few regression rows"])  # fmt: skip
def test_bad_calibration_input_is_one_clear_error_and_nothing_is_published(
    repository: Path, calibration_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    x, y = _digits(calibration_files)
    model, extra = "digits", []
    if case == "no labels":
        data, expected = _write(tmp_path, x=x), "no label array y. It has arrays: x"
    elif case == "unknown column":
        data, extra, expected = calibration_files["digits"], ["--target", "label"], "no label array label"
    elif case == "unknown labels":
        data = _write(tmp_path, x=x[:50], y=np.arange(50) % 13)
        expected = "labels the model does not know: 10, 11, 12 (3 distinct). Expected class indices 0..9"
    elif case == "too few rows for the risk":
        data, extra = _write(tmp_path, x=x[:100], y=y[:100]), ["--abstain-target", "risk=0.01"]
        expected = "needs at least 597 accepted calibration rows even if not one of them is wrong"
    elif case == "unreachable risk":
        wrong = (y + 1 + np.arange(len(y)) % 9) % 10  # every label wrong: no threshold keeps errors under 20 %
        data, extra = _write(tmp_path, x=x, y=wrong), ["--abstain-target", "risk=0.2"]
        expected = f"no threshold bounds the selective risk by 0.2 with confidence 0.95 on {len(y)} rows"
    else:
        model = "diabetes"
        diabetes = np.load(calibration_files["diabetes"])
        data = _write(tmp_path, x=diabetes["x"][:10], y=diabetes["y"][:10])
        expected = "10 calibration rows cannot give a conformal interval at level 0.95 (that needs at least 19)"
    before = versions(repository / model)
    assert main(["calibrate", str(repository / model), "--data", str(data), *extra, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert expected in error, error
    assert "Traceback" not in error and error.count("\n") == 1
    assert versions(repository / model) == before
    assert not [p for p in (repository / model).iterdir() if p.name.startswith(".staging")]


def test_export_refuses_an_unreachable_risk_before_converting_and_calibrates_otherwise(
    model_repository: Path, calibration_files: dict[str, Path], tmp_path: Path
) -> None:
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target

    keras_model = model_repository.parent / "digits" / "model.keras"
    target = tmp_path / "repo"
    refused = CalibrationOptions(calibration_files["digits"], abstain_target=parse_target("risk=0.01"))
    with pytest.raises(InvalidArgument, match="needs at least 597 accepted calibration rows"):
        export(ExportOptions(model_path=keras_model, repository=target, name="digits", calibration=refused))
    assert versions(target / "digits") == [] if (target / "digits").exists() else True
    steps: list[str] = []
    accepted = CalibrationOptions(calibration_files["digits"], abstain_target=parse_target("coverage=0.9"))
    version, manifest = export(ExportOptions(model_path=keras_model, repository=target, name="digits",
                                             calibration=accepted), step=steps.append)  # fmt: skip
    assert version == 1 and "calibrating" in steps
    assert manifest.calibration is not None and Manifest.load(target / "digits" / "1") == manifest
    record = manifest.calibration.outputs[0]
    assert record.score is not None and record.record(record.score).selection.coverage >= 0.9  # type: ignore[union-attr]
