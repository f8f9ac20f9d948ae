"""KServe's layout: one exported version's files directly in the repository root (``/mnt/models``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.models.repository import ModelRepository
from mcdrop.serving.server.settings import ServerSettings
from tests.helpers import in_process_server, run_cli


def single_model(model_repository: Path, target: Path) -> Path:
    shutil.copytree(model_repository / "digits" / "1", target)
    return target


def test_a_single_model_directory_is_served_under_its_manifest_name_or_the_given_one(
    model_repository: Path, tmp_path: Path, digits_rows: np.ndarray
) -> None:
    root = single_model(model_repository, tmp_path / "mnt-models")
    with in_process_server(root) as (_, client):
        assert [(m.name, m.versions) for m in client.list_models()] == [("digits", [1])]
        single = client.predict("digits", digits_rows[:3], samples=40, seed=2)
    with in_process_server(model_repository) as (_, client):
        usual = client.predict("digits", digits_rows[:3], samples=40, seed=2)
    assert single.mean.tobytes() == usual.mean.tobytes()  # the same files, the same answers
    with in_process_server(root, model_name="handwriting") as (_, client):
        assert [m.name for m in client.list_models()] == ["handwriting"]
        assert client.predict("handwriting", digits_rows[:1], mode="deterministic").version == 1


def test_a_model_folder_given_as_repository_says_what_to_pass_instead(model_repository: Path, tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(model_repository / "digits", folder)
    repository = ModelRepository(folder)
    repository.scan()
    assert repository.last_scan_error is not None
    assert "looks like one model's folder" in repository.last_scan_error
    assert "pass its parent" in repository.last_scan_error
    assert repository.states() == {}


def test_model_name_setting_is_checked() -> None:
    with pytest.raises(Exception, match="model_name"):
        ServerSettings(repository=".", model_name="bad name!").validate()


def test_serve_cli_takes_model_name_and_its_variable(model_repository: Path, tmp_path: Path) -> None:
    help_text = run_cli("serve", "--help").stdout
    assert "--model-name" in help_text and "MCDROP_MODEL_NAME" in help_text
