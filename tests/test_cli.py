"""The command line, run as a user runs it: a separate process, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_cli


def test_missing_csv_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli("train", "--dataset", "csv:missing.csv", "--target", "y", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["mcdrop train: error: Data file not found: missing.csv"]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_csv_without_target_still_says_what_is_wrong(tmp_path: Path) -> None:
    result = run_cli("train", "--dataset", "csv:missing.csv", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.csv" in result.stderr and "Traceback" not in result.stderr


def test_bad_inputs_exit_2_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n1,2,3\n4,x,6\n7,8,9\n", encoding="utf-8")
    cases = {
        ("--dataset", f"csv:{data}", "--target", "label"): "Target column 'label' not found",
        ("--dataset", f"csv:{data}", "--target", "y"): "Non-numeric value 'x' in column 'b', row 3",
        ("--dropout", "0.2,1.5"): "Expected a dropout rate in [0, 1)",
        ("--config", str(tmp_path / "none.toml")): "Config file not found",
    }
    for args, message in cases.items():
        result = run_cli("train", "--out", str(tmp_path / "o"), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "train.toml"
    config.write_text(
        f'[train]\nout = "{tmp_path / "o"}"\nepochs = 5\nhidden = [8]\ndropout = [0.3]\nseed = 4\n', encoding="utf-8"
    )
    result = run_cli("train", "--config", str(config), "--epochs", "2", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["epochs_run"] == 2 and record["config"]["epochs"] == 2
    assert record["config"]["hidden"] == [8] and record["config"]["seed"] == 4
    assert (tmp_path / "o" / "model.keras").is_file()


def test_export_errors_exit_2(tmp_path: Path) -> None:
    result = run_cli("export", str(tmp_path / "none.keras"), "--repository", str(tmp_path), "--name", "m")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("mcdrop export: error: Model file not found")
    model = tmp_path / "model.txt"
    model.write_text("not a model")
    result = run_cli("export", str(model), "--repository", str(tmp_path), "--name", "m")
    assert result.returncode == 2 and "Expected a Keras 3 .keras" in result.stderr
    result = run_cli("export", str(model), "--repository", str(tmp_path), "--name", "m", "--noise-precision", "0")
    assert result.returncode == 2
    assert "argument --noise-precision: expected a number > 0, received 0" in result.stderr


def test_export_of_a_model_without_dropout_says_so(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "plain.keras")
    result = run_cli("export", str(tmp_path / "plain.keras"), "--repository", str(tmp_path / "r"), "--name", "p")
    assert result.returncode == 0, result.stderr
    assert "draws no dropout mask in training mode: exported the deterministic graph only" in result.stdout
    assert sorted(p.name for p in (tmp_path / "r" / "p" / "1").iterdir()) == ["deterministic.tflite", "manifest.json"]
    args = ("export", str(tmp_path / "plain.keras"), "--repository", str(tmp_path / "r"), "--name", "p")
    result = run_cli(*args, "--noise-precision", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "mcdrop export: error: noise_precision (--noise-precision) applies to regression models. "
        "This model is a classifier."
    )


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's first command: train → export → serve → query → stop."""
    result = run_cli("demo", "--workdir", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("[1/4] training", "[2/4] exporting", "[3/4] starting", "[4/4] querying"):
        assert step in result.stdout
    assert "mutual information (epistemic uncertainty): digit" in result.stdout
    assert "calibrated on 359 rows" in result.stdout and "abstain if" in result.stdout
    assert "server stopped with exit code 0" in result.stdout
    assert (tmp_path / "demo" / "repository" / "digits" / "1" / "mc.tflite").is_file()
