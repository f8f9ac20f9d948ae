"""Venvs of outside tools whose pins must not move the project's (manifest validators, an old LiteRT runtime,
KServe's SDK), kept in the checkout and built once.

A fresh clone has none of them, and building one takes 20-40 s of mostly downloading and unpacking. The tests that
need one are known after collection, so ``conftest.py`` starts those builds in the background then, and the fixture
waits only for whatever is left when its first test runs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

__all__ = ["DEPLOY_TOOLS", "KSERVE_SDK", "PERF_ANALYZER", "TFLITE_RUNTIME", "ToolVenv"]


@dataclasses.dataclass
class ToolVenv:
    folder: str
    """Under the checkout (ignored by git)."""
    requirements: tuple[str, ...]
    fixture: str
    """The pytest fixture that hands the venv to tests: its tests trigger the background build."""
    _build: subprocess.Popen[bytes] | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def path(self) -> Path:
        return REPO / self.folder

    @property
    def _marker(self) -> Path:
        tag = "-".join(r.replace("==", "_").replace("<", "lt") for r in self.requirements)
        return self.path / f"installed-{tag}"

    @property
    def _log(self) -> Path:
        return REPO / f"{self.folder}.log"

    def start(self) -> None:
        """Start building the venv in the background unless it is built or being built."""
        if self._marker.exists() or self._build is not None:
            return
        pip = self.path / "bin" / "pip"
        build = (f'"{sys.executable}" -m venv --clear "{self.path}" && "{pip}" install --quiet '
                 + " ".join(f"'{r}'" for r in self.requirements) + f' && touch "{self._marker}"')  # fmt: skip
        # Under a lock, and only if no one built it meanwhile: the suite's xdist workers both ask for every venv.
        script = f'test -e "{self._marker}" || {build}'
        lock = REPO / f"{self.folder}.lock"
        with self._log.open("ab") as log:
            self._build = subprocess.Popen(["flock", str(lock), "bash", "-c", script], stdout=log,
                                           stderr=subprocess.STDOUT)  # fmt: skip

    def bin(self, timeout: float = 900) -> Path:
        """The venv's ``bin`` folder, once built (building it now if nothing started it)."""
        self.start()
        if self._build is not None:
            returncode = self._build.wait(timeout)
            self._build = None
            if returncode != 0:
                raise RuntimeError(f"building {self.folder} failed ({returncode}): {self._log.read_text()[-2000:]}")
            self._log.unlink(missing_ok=True)
        return self.path / "bin"


DEPLOY_TOOLS = ToolVenv(".venv-deploy-tools", ("kubernetes-validate==1.37.0", "checkov==3.3.30"), "tools")
TFLITE_RUNTIME = ToolVenv(".venv-tflite-runtime", ("tflite-runtime==2.14.0", "numpy<2"), "old_runtime")
KSERVE_SDK = ToolVenv(".venv-kserve", ("kserve==0.21.0",), "kserve_sdk")
# Triton's perf_analyzer ships in this wheel only (bin/perf_analyzer); it links CUDA's runtime even without a GPU.
PERF_ANALYZER = ToolVenv(".venv-perf-analyzer", ("tritonclient==2.40.0", "nvidia-cuda-runtime-cu12==12.9.79"),
                         "perf_analyzer")  # fmt: skip
ALL = (DEPLOY_TOOLS, TFLITE_RUNTIME, KSERVE_SDK, PERF_ANALYZER)
