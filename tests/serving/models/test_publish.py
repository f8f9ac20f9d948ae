"""Atomic publication: a version appears complete or not at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcdrop.serving.models import publish
from mcdrop.serving.models.layout import STAGING_PREFIX, versions
from tests.helpers import REPO


def test_staging_is_invisible_and_versions_count_up(tmp_path: Path) -> None:
    staging = publish.create_staging(tmp_path, "m")
    (staging / "f").write_text("x")
    assert versions(tmp_path / "m") == []
    assert publish.publish(staging) == 1
    second = publish.create_staging(tmp_path, "m")
    (second / "f").write_text("y")
    assert publish.publish(second) == 2
    assert (tmp_path / "m" / "2" / "f").read_text() == "y"
    assert versions(tmp_path / "m") == [1, 2]


@pytest.mark.slow
def test_export_killed_mid_write_leaves_no_version(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from tests.pipeline.export import models

    model = models.sequential_mlp(tmp_path / "mlp.keras")
    repo = tmp_path / "repo"
    env = dict(os.environ)
    command = [
        sys.executable,
        "-m",
        "mcdrop.serving.cli",
        "export",
        str(model),
        "--repository",
        str(repo),
        "--name",
        "k",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((repo / "k").glob(f"{STAGING_PREFIX}*/deterministic.tflite")):
            assert process.poll() is None, "export finished before it could be killed"
            assert time.monotonic() < deadline, "export never started writing"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # mid-export: graphs partly written, nothing published
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert versions(repo / "k") == []
    leftovers = [p.name for p in (repo / "k").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(STAGING_PREFIX)

    # The next export publishes version 1 and removes the dead export's staging directory.
    from mcdrop.pipeline.export.exporter import ExportOptions, export

    version, _ = export(ExportOptions(model_path=model, repository=repo, name="k"))
    assert version == 1
    assert [p.name for p in (repo / "k").iterdir()] == ["1"]
