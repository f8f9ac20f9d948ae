from __future__ import annotations

from pathlib import Path

import pytest

from mcdrop.pipeline.training.config import TrainConfig, load_config, parse_float_list
from mcdrop.serving.errors import InvalidArgument, NotFound


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_then_toml_then_flags(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", '[train]\nout = "from-file"\nepochs = 7\nhidden = [32]\ndropout = [0.3]\n')
    config = load_config(toml, {"epochs": 3})
    assert config.epochs == 3  # the flag wins over the file
    assert config.out == "from-file"  # the file wins over the default
    assert config.hidden == [32]
    assert config.batch_size == TrainConfig.batch_size  # untouched default


def test_top_level_toml_without_table(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", 'out = "x"\nseed = 9\n')
    assert load_config(toml, {}).seed == 9


def test_unknown_key_is_named(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", 'out = "x"\nepoch = 3\n')
    with pytest.raises(InvalidArgument, match=r"Unknown training setting.*epoch.*Expected any of"):
        load_config(toml, {})


def test_missing_and_broken_config(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="Config file not found"):
        load_config(tmp_path / "nope.toml", {})
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        load_config(write(tmp_path / "bad.toml", "out = = 1"), {})


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1])
def test_dropout_rate_outside_unit_interval_is_rejected(rate: float) -> None:
    with pytest.raises(InvalidArgument) as info:
        TrainConfig(out="x", dropout=[0.2, rate]).validate()
    message = str(info.value)
    assert "Expected a dropout rate in [0, 1)" in message
    assert f"dropout={rate!r}" in message


def test_input_and_conv_rates_are_validated() -> None:
    with pytest.raises(InvalidArgument, match="input_dropout"):
        TrainConfig(out="x", input_dropout=1.0).validate()
    with pytest.raises(InvalidArgument, match="conv_dropout"):
        TrainConfig(out="x", architecture="cnn", conv_dropout=[2.0]).validate()


def test_rates_broadcast_or_match_layers() -> None:
    assert TrainConfig(out="x", hidden=[8, 8, 8], dropout=[0.5]).validate().dropout == [0.5, 0.5, 0.5]
    assert TrainConfig(out="x", hidden=[8, 8], dropout=[0.2, 0.5]).validate().dropout == [0.2, 0.5]
    with pytest.raises(InvalidArgument, match="Expected 1 or 2 rate"):
        TrainConfig(out="x", hidden=[8, 8], dropout=[0.1, 0.2, 0.3]).validate()


def test_other_settings_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="Missing output directory"):
        TrainConfig().validate()
    with pytest.raises(InvalidArgument, match="architecture"):
        TrainConfig(out="x", architecture="rnn").validate()  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="epochs"):
        TrainConfig(out="x", epochs=0).validate()
    with pytest.raises(InvalidArgument, match="max_norm"):
        TrainConfig(out="x", max_norm=-1.0).validate()


def test_list_parsing() -> None:
    assert parse_float_list("0.2, 0.5") == [0.2, 0.5]
    with pytest.raises(InvalidArgument, match="comma-separated numbers"):
        parse_float_list("0.2,abc")
