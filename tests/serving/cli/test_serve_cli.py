"""``mcdrop serve``'s flags come from the settings definition; bad settings are usage errors (exit 2, one line)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcdrop.serving.server.settings import ENV_PREFIX, ServerSettings
from tests.helpers import REPO, run_cli


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--log-level", "verbose"], {}, "Invalid setting log_level (--log-level / MCDROP_LOG_LEVEL). Expected one "
         "of DEBUG, INFO, WARNING, ERROR. Received: 'VERBOSE'"),
        ([], {"MCDROP_LOG_LEVEL": "loud"}, "Expected one of DEBUG, INFO, WARNING, ERROR. Received: 'LOUD'"),
        (["--log-format", "xml"], {}, "Invalid setting log_format (--log-format / MCDROP_LOG_FORMAT). Expected one "
         "of json, text. Received: 'xml'"),
        (["--mask-source", "gpu"], {}, "Expected one of host, graph. Received: 'gpu'"),
        (["--grpc-threads", "0"], {}, "Invalid setting grpc_threads (--grpc-threads / MCDROP_GRPC_THREADS). "
         "Expected an integer >= 1"),
        (["--workers", "-1"], {}, "Invalid setting workers (--workers / MCDROP_WORKERS). Expected a number >= 0"),
        ([], {"MCDROP_PORT": "eighty"}, "Environment variable MCDROP_PORT must be a int. Received: 'eighty'"),
    ],
)  # fmt: skip
def test_invalid_settings_exit_2_with_one_line(
    model_repository: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcdrop.serving.cli", "serve", "--repository", str(model_repository), "--port", "0",
         "--metrics-port", "-1", *args],
        env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcdrop serve: error: ") and message in lines[0], lines


def test_every_setting_has_a_generated_flag_with_its_default_and_variable() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for field in dataclasses.fields(ServerSettings):
        flag = "--" + field.name.replace("_", "-")
        variable = ENV_PREFIX + field.name.upper()
        if field.name == "auth_tokens":  # a secret: environment only, never on a command line
            assert flag + " " not in text
            continue
        assert flag in text, flag
        assert f"(env {variable})" in text, variable
    assert "default 10 (env MCDROP_DEFAULT_CHUNK)" in text and "default 8500 (env MCDROP_PORT)" in text
