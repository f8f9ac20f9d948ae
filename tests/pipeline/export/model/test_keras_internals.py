"""The export's private Keras APIs: one adapter, a declared range, a clear error where they are missing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from mcdrop.pipeline.export.errors import ExportError  # noqa: E402
from mcdrop.pipeline.export.exporter import ExportOptions, export  # noqa: E402
from mcdrop.pipeline.export.model import keras_internals  # noqa: E402
from tests.helpers import REPO  # noqa: E402
from tests.pipeline.export import models  # noqa: E402


def test_the_declared_keras_range_is_the_adapters() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"keras{keras_internals.SUPPORTED_KERAS}" in pyproject["project"]["optional-dependencies"]["train"]
    keras_internals.check_supported()  # the installed Keras has everything


@pytest.mark.parametrize(
    "missing", ["_run_through_graph", "_call_context_args", "_flatten_layers", "get_dropout_mask", "random.dropout"]
)
def test_a_keras_without_the_internals_gets_a_clear_error(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_path = models.sequential_mlp(tmp_path / "mlp.keras")
    if missing == "_run_through_graph":
        from keras.src.ops.function import Function

        monkeypatch.delattr(Function, "_run_through_graph")
    elif missing == "_flatten_layers":
        monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    elif missing == "get_dropout_mask":
        from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

        monkeypatch.delattr(DropoutRNNCell, "get_dropout_mask")
    elif missing == "random.dropout":
        from keras.src import backend

        monkeypatch.delattr(backend.random, "dropout")
    else:
        original = keras.layers.Layer.__getattribute__

        def without(self: object, name: str) -> object:
            if name == missing:
                raise AttributeError(name)
            return original(self, name)

        monkeypatch.setattr(keras.layers.Layer, "__getattribute__", without)
    with pytest.raises(ExportError) as caught:
        export(ExportOptions(model_path=model_path, repository=tmp_path / "repo", name="m"))
    message = str(caught.value)
    assert missing in message and f"Supported: keras{keras_internals.SUPPORTED_KERAS}" in message
    assert not (tmp_path / "repo" / "m" / "1").exists()
