"""An LSTM and a Transformer block, served: masks come from the manifest's description, answers are reproducible."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.serving.client import Client
from mcdrop.serving.errors import RpcFailed
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.models.masks import MaskStream
from tests.helpers import in_process_server

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def served_sequences(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Client]]:
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from tests.pipeline.export import models

    root = tmp_path_factory.mktemp("sequences")
    lstm = keras.layers.LSTM(16, dropout=0.2, recurrent_dropout=0.2, name="lstm")
    for name, path in (
        ("lstm", models.sequence_model(root / "lstm.keras", lstm)),
        ("transformer", models.transformer_classifier(root / "transformer.keras")),
    ):
        export(ExportOptions(model_path=path, repository=root / "repo", name=name))
    with in_process_server(root / "repo") as (_, client):
        yield root / "repo", client


def inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if name == "lstm":
        return rng.normal(size=(4, 6, 4)).astype(np.float32)
    return rng.integers(0, 50, size=(4, 12)).astype(np.float32)  # token ids, sent as FP32


def host_masked_mean(repo: Path, name: str, x: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """What the server must answer: mc_masked.tflite fed with the masks the manifest describes, drawn from ``seed``."""
    manifest: dict[str, Any] = json.loads((repo / name / "1" / "manifest.json").read_text())
    feeds = MaskStream(Manifest.from_json(manifest).dropout_layers, seed, len(x)).next(samples)
    for site in manifest["dropout_layers"]:
        assert feeds[site["masked_input"]].shape == (samples, len(x), *site["noise_shape"])
    return Graph(repo / name / "1" / "mc_masked.tflite").run({"x": x, **feeds})[0].mean(axis=0)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_served_uncertainty_comes_from_the_described_masks_and_is_reproducible(
    served_sequences: tuple[Path, Client], name: str
) -> None:
    repo, client = served_sequences
    x = inputs(name)
    first = client.predict(name, x, samples=200, seed=7)
    again = client.predict(name, x, samples=200, seed=7)
    other = client.predict(name, x, samples=200, seed=8)
    assert np.array_equal(first.mean, again.mean) and np.array_equal(first.std, again.std)
    assert not np.array_equal(first.mean, other.mean)
    assert first.mutual_information is not None and (first.mutual_information > 1e-4).all()  # never silently certain
    assert (first.std > 0).any(axis=-1).all()
    np.testing.assert_allclose(first.mean, host_masked_mean(repo, name, x, 200, 7), rtol=1e-5, atol=1e-6)
    deterministic = client.predict(name, x, mode="deterministic")
    assert deterministic.std.max() == 0 and deterministic.mean.shape == first.mean.shape


def test_token_ids_outside_the_vocabulary_or_not_whole_are_refused(served_sequences: tuple[Path, Client]) -> None:
    _, client = served_sequences
    for bad, shown in ((50.0, "50.0"), (3.5, "3.5"), (-1.0, "-1.0")):
        x = inputs("transformer")
        x[1, 2] = bad
        with pytest.raises(RpcFailed, match=rf"INVALID_ARGUMENT.*{shown} at index \[1, 2\].*\[0, 49\]"):
            client.predict("transformer", x, samples=10)
    assert client.predict("transformer", inputs("transformer"), samples=10).mean.shape == (4, 3)
