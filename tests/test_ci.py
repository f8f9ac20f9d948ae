"""CI's container-engine step starts a podman service of its own and leaves every other one alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

REQUIRED = os.environ.get("MCDROP_REQUIRE_CONTAINER_TESTS") == "1"


@pytest.mark.slow
def test_container_engine_leaves_other_podman_services_running() -> None:
    if shutil.which("podman") is None and not REQUIRED:
        pytest.skip("podman is not installed here (CI installs it and requires this test)")
    # A stand-in for someone else's service: its command line is what `pkill -f "podman system service"` matched.
    other = subprocess.Popen(["bash", "-c", 'exec -a "podman system service --someone-elses" sleep 600'])
    ours = None
    try:
        result = subprocess.run(
            [str(REPO / ".ci" / "container-engine")], capture_output=True, text=True, timeout=900, check=False
        )
        assert result.returncode == 0, result.stderr
        exports = dict(
            line.removeprefix("export ").replace("'", "").split("=", 1) for line in result.stdout.splitlines()
        )
        ours = int(exports["MCDROP_PODMAN_PID"])
        assert other.poll() is None, "the other podman service was killed"
        assert b"podman\x00system\x00service" in Path(f"/proc/{ours}/cmdline").read_bytes()
        assert exports["DOCKER_HOST"].startswith("unix://") and Path(exports["DOCKER_HOST"][7:]).is_socket()
    finally:
        if ours is not None:
            os.kill(ours, signal.SIGTERM)
        other.kill()
        other.wait(timeout=10)
