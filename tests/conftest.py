"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import tool_venvs


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

    root = tmp_path_factory.mktemp("models")
    repo = root / "repo"
    for name, dataset, epochs in (("digits", "digits", 15), ("diabetes", "diabetes", 20)):
        out = root / name
        train(TrainConfig(out=str(out), dataset=dataset, hidden=[64, 64], dropout=[0.2, 0.5], epochs=epochs,
                          seed=1, quiet=True).validate())  # fmt: skip
        export(ExportOptions(model_path=out / "model.keras", repository=repo, name=name))
    return repo


@pytest.fixture(scope="session")
def digits_rows() -> np.ndarray:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    return load_digits().data[:8].astype(np.float32)
