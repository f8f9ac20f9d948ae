"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import tool_venvs
from tests.workers import built_once


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start building the outside tools' venvs the collected tests need, so they install while other tests run."""
    wanted = {name for item in items for name in getattr(item, "fixturenames", ())}
    for venv in tool_venvs.ALL:
        if venv.fixture in wanted:
            venv.start()


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with ``digits`` (classifier, v1) and ``diabetes`` (regressor, v1), trained briefly."""
    pytest.importorskip("keras")  # building the models needs the train extra
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    def build(root: Path) -> None:
        for name, dataset, epochs in (("digits", "digits", 15), ("diabetes", "diabetes", 20)):
            out = root / name
            train(TrainConfig(out=str(out), dataset=dataset, hidden=[64, 64], dropout=[0.2, 0.5], epochs=epochs,
                              seed=1, quiet=True).validate())  # fmt: skip
            export(ExportOptions(model_path=out / "model.keras", repository=root / "repo", name=name))

    return built_once(tmp_path_factory, "models", build) / "repo"


@pytest.fixture(scope="session")
def calibration_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Labelled rows the ``model_repository`` models did not train on (their validation splits), as .npz files."""
    pytest.importorskip("sklearn")
    from mcdrop.pipeline.training.data import load_dataset

    root = tmp_path_factory.mktemp("calibration")
    files = {}
    for name in ("digits", "diabetes"):
        task = "classification" if name == "digits" else "regression"
        data = load_dataset(name, task=task, target=[], val_fraction=0.2, seed=1)
        files[name] = root / f"{name}.npz"
        np.savez(files[name], x=data.x_val.astype(np.float32), y=data.y_val)
    return files


@pytest.fixture(scope="session")
def calibrated_repository(model_repository: Path, calibration_files: dict[str, Path],
                          tmp_path_factory: pytest.TempPathFactory) -> Path:  # fmt: skip
    """``model_repository`` with a calibrated version 2 of each model (``mcdrop calibrate``): digits abstains at
    ``coverage=0.9``, diabetes has conformal intervals. Version 1 of each is uncalibrated."""
    import shutil

    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target
    from mcdrop.serving.calibration.publish import calibrate_version

    def build(root: Path) -> None:
        repo = root / "repo"
        shutil.copytree(model_repository, repo)
        digits = CalibrationOptions(calibration_files["digits"], abstain_target=parse_target("coverage=0.9"))
        calibrate_version(repo, "digits", 1, digits)
        calibrate_version(repo, "diabetes", 1, CalibrationOptions(calibration_files["diabetes"]))

    return built_once(tmp_path_factory, "calibrated", build) / "repo"


@pytest.fixture(scope="session")
def digits_rows() -> np.ndarray:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    return load_digits().data[:8].astype(np.float32)


@pytest.fixture(scope="session")
def variant_repository(model_repository: Path, calibration_files: dict[str, Path],
                       tmp_path_factory: pytest.TempPathFactory) -> Path:  # fmt: skip
    """``digits`` exported again with quantised variants (``dynamic-int8``, ``int8``, ``int8-io``), calibrated on its
    validation rows (``coverage=0.9``): the variants are verified and compared on real rows."""
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target

    def build(root: Path) -> None:
        calibration = CalibrationOptions(calibration_files["digits"], abstain_target=parse_target("coverage=0.9"))
        export(ExportOptions(model_path=model_repository.parent / "digits" / "model.keras", repository=root / "repo",
                             name="digits", quantize=("dynamic-int8", "int8", "int8-io"),
                             calibration=calibration))  # fmt: skip

    return built_once(tmp_path_factory, "variants", build) / "repo"


@pytest.fixture(scope="session")
def dense_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained U-Net ``unet`` (per-pixel softmax ``[B, 32, 32, 3]``): version 1 exported and verified on real
    rows, version 2 calibrated per pixel (coverage 0.9)."""
    pytest.importorskip("keras")
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target
    from mcdrop.serving.calibration.publish import calibrate_version
    from tests.pipeline.export import models

    def build(root: Path) -> None:
        images, labels = models.segmentation_scenes(48, 32, seed=1)
        np.savez(root / "verify.npz", x=images[:8])
        np.savez(root / "calibration.npz", x=images[8:], y=labels[8:])  # a class per pixel: [rows, H, W]
        model = models.unet(root / "unet.keras", 32)
        export(ExportOptions(model_path=model, repository=root / "repo", name="unet", verify_data=root / "verify.npz"))
        target = parse_target("coverage=0.9")
        options = CalibrationOptions(root / "calibration.npz", abstain_target=target)
        calibrate_version(root / "repo", "unet", 1, options)

    return built_once(tmp_path_factory, "dense", build) / "repo"
