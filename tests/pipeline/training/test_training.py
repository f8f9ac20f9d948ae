"""Real training runs on small data (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mcdrop.pipeline.training.config import TrainConfig  # noqa: E402
from mcdrop.pipeline.training.loop import train  # noqa: E402


def quick(out: Path, **overrides: object) -> TrainConfig:
    settings: dict[str, object] = {"out": str(out), "epochs": 3, "hidden": [32, 16], "quiet": True, "seed": 5}
    settings.update(overrides)
    return TrainConfig(**settings).validate()  # type: ignore[arg-type]


def weights(out: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in keras.saving.load_model(out / "model.keras").get_weights()]


def test_writes_model_and_record(tmp_path: Path) -> None:
    record = train(quick(tmp_path / "run"))
    on_disk = json.loads((tmp_path / "run" / "training.json").read_text())
    assert on_disk == record
    assert set(record["history"]) >= {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert len(record["history"]["loss"]) == 3
    assert set(record["final_metrics"]) == {"train", "val"}
    assert record["train_val_gap"]["accuracy"] == pytest.approx(
        record["final_metrics"]["train"]["accuracy"] - record["final_metrics"]["val"]["accuracy"]
    )
    assert len(record["preprocessing"]["x_mean"]) == 64
    assert not list((tmp_path / "run").glob(".partial*"))


def test_model_contains_the_requested_dropout_layers(tmp_path: Path) -> None:
    train(quick(tmp_path / "run", hidden=[16, 16, 8], dropout=[0.1, 0.0, 0.4], input_dropout=0.05))
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    found = [(layer.name, layer.rate) for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    # rate 0 means no layer; never a dropout on the output layer
    assert found == [
        ("input_dropout", pytest.approx(0.05)),
        ("dropout_1", pytest.approx(0.1)),
        ("dropout_3", pytest.approx(0.4)),
    ]
    assert model.layers[-1].name == "probabilities"


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        train(quick(tmp_path / name, seed=seed))
    a, b, c = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_cnn_with_spatial_dropout_and_max_norm(tmp_path: Path) -> None:
    config = quick(tmp_path / "cnn", architecture="cnn", conv_filters=[4, 8], conv_dropout=[0.2, 0.3], max_norm=0.5)
    record = train(config)
    model = keras.saving.load_model(tmp_path / "cnn" / "model.keras")
    spatial = [layer for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D)]
    assert [round(layer.rate, 3) for layer in spatial] == [0.2, 0.3]
    assert [d["class"] for d in record["dropout_layers"]][:2] == ["SpatialDropout2D", "SpatialDropout2D"]
    dense = model.get_layer("dense_1").kernel.numpy()
    assert np.sqrt((dense**2).sum(axis=0)).max() <= 0.5 + 1e-5  # max-norm held on every unit


def test_regression_reports_original_units(tmp_path: Path) -> None:
    record = train(quick(tmp_path / "reg", dataset="diabetes", epochs=30, hidden=[32], dropout=[0.1], l2=1e-4))
    assert record["task"] == "regression"
    model = keras.saving.load_model(tmp_path / "reg" / "model.keras")
    assert model.layers[-1].name == "destandardise"
    # Diabetes targets range 25..346: a model in original units has RMSE near 55, not near 1.
    assert 40 < record["final_metrics"]["val"]["rmse"] < 80
    # The observation noise, in the same units: most of the validation error, never more than all of it.
    noise = record["observation_noise"]
    assert len(noise["precision"]) == 1 and noise["variance"][0] == pytest.approx(1 / noise["precision"][0])
    assert 0.3 * 40**2 < noise["variance"][0] < 1.2 * record["final_metrics"]["val"]["rmse"] ** 2
    assert "validation split" in noise["method"]


def test_vector_regression_from_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = np.stack([x[:, 0] * 100 + 5, x[:, 1] - x[:, 2]], axis=1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    train(quick(tmp_path / "vec", dataset=f"npz:{tmp_path / 'd.npz'}", task="regression"))
    model = keras.saving.load_model(tmp_path / "vec" / "model.keras")
    assert model.output_shape == (None, 2)


@pytest.mark.slow
def test_default_digits_run_reaches_90_percent(tmp_path: Path) -> None:
    record = train(TrainConfig(out=str(tmp_path / "d"), dataset="digits", seed=1, quiet=True).validate())
    assert record["final_metrics"]["val"]["accuracy"] >= 0.9
