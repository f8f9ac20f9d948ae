"""The pipeline commands keep TensorFlow's C++ logs and Python warnings off the screen; ``--debug`` shows them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import run_cli

# TensorFlow/XLA/absl C++ log lines ("E0000 00:00:… cuda_platform.cc:52] …"), absl's preamble, oneDNN and
# CUDA notices, and Python warnings ("…: UserWarning: …").
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit|cuda|Warning: |warnings\.warn", re.MULTILINE)


@pytest.mark.slow
def test_train_and_export_print_no_tensorflow_logs_or_warnings(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    train = run_cli("train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--dropout", "0.2",
                    "--out", str(tmp_path / "m"), "--quiet")  # fmt: skip
    assert train.returncode == 0, train.stderr
    export = run_cli("export", str(tmp_path / "m" / "model.keras"), "--repository", str(tmp_path / "repo"),
                     "--name", "m", "--quiet")  # fmt: skip
    assert export.returncode == 0, export.stderr
    for result in (train, export):
        assert not NOISE.findall(result.stdout + result.stderr), result.stdout + result.stderr
    # The same command with --debug lets TensorFlow's own output through: the filter above would see it.
    debug = run_cli("--debug", "train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--dropout",
                    "0.2", "--out", str(tmp_path / "d"), "--quiet")  # fmt: skip
    assert debug.returncode == 0, debug.stderr
    assert NOISE.findall(debug.stderr), debug.stderr
