"""Triton's perf_analyzer against an mcdrop server: the standard tool's figures for the requests the bench's own load
generator sends.

perf_analyzer ships inside the ``tritonclient==2.40.0`` wheel (``bin/perf_analyzer``; the ``perf-analyzer`` package on
PyPI is an empty placeholder). It links Debian's ``libb64.so.0d`` and CUDA's ``libcudart.so.12`` even without a GPU;
the latter comes from PyPI's ``nvidia-cuda-runtime-cu12``, installed beside it, and is put on ``LD_LIBRARY_PATH`` here.

What it sends (read from its source and checked on the wire): every output of the model metadata by name
(``samples`` included), inputs as raw bytes, ``--request-parameter``s over gRPC only (its HTTP client sends none, so
HTTP runs measure the model's default request), and for ``--service-kind tfserving`` a ``Predict`` with the
signature's inputs (scalars cannot be sent: it appends no data for a shape without dimensions).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument, MCDropError, NotFound

__all__ = ["INSTALL", "PerfAnalyzer", "input_data"]

INSTALL = (
    "python -m venv pa && pa/bin/pip install tritonclient==2.40.0 nvidia-cuda-runtime-cu12 && apt-get install "
    "libb64-0d, then --perf-analyzer pa/bin/perf_analyzer"
)
TIMEOUT_SECONDS = 600
STABILITY_PERCENT = 50
"""perf_analyzer's default (10 %: three windows' latencies within 10 % of each other) fails on a machine whose timings
move by 30 % between runs ("Failed to obtain stable measurement within 10 measurement windows"); the bench takes the
median of alternating runs instead."""


@dataclasses.dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    env: dict[str, str]

    @staticmethod
    def find(given: str) -> PerfAnalyzer:
        """The binary at ``given`` (a path, or a name on ``PATH``), checked to start.

        Raises:
            NotFound: no such binary.
            InvalidArgument: it does not start (a missing shared library, named).
        """
        found = shutil.which(given) or (given if Path(given).is_file() else None)
        if found is None:
            raise NotFound(f"perf_analyzer not found at {given!r}. Expected the binary of tritonclient==2.40.0's "
                           f"wheel: {INSTALL}.")  # fmt: skip
        binary = Path(found).resolve()
        env = dict(os.environ)
        libraries = [str(p) for p in sorted(binary.parent.parent.glob("lib/python3*/site-packages/nvidia/*/lib"))]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        started = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60,
                                 check=False)  # fmt: skip
        if "Perf Analyzer Version" not in started.stdout + started.stderr:  # (it prints to stderr)
            problem = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InvalidArgument(f"perf_analyzer at {binary} does not start: {problem[0]}. Expected: {INSTALL}.")
        return PerfAnalyzer(binary, env)

    def measure(
        self,
        *,
        model: str,
        url: str,
        protocol: str,
        concurrency: Sequence[int],
        data: Path,
        interval_ms: int = 3000,
        parameters: Mapping[str, int | str] | None = None,
        service_kind: str = "triton",
        batch: int = 1,
    ) -> list[dict[str, Any]]:
        """Throughput and latency at each concurrency (one run, stabilised windows of ``interval_ms``), by
        concurrency.

        Raises:
            MCDropError: perf_analyzer failed; its last lines of output say why.
        """
        with tempfile.TemporaryDirectory() as folder:
            results = Path(folder) / "results.csv"
            command = [str(self.binary), "-m", model, "-u", url, "-i", protocol, "--service-kind", service_kind,
                       "-b", str(batch), "--input-data", str(data), "--measurement-interval", str(interval_ms),
                       "--concurrency-range", ",".join(map(str, concurrency)) if len(concurrency) == 1 else
                       f"{min(concurrency)}:{max(concurrency)}:{max(concurrency) - min(concurrency)}",
                       "--stability-percentage", str(STABILITY_PERCENT), "-f", str(results)]  # fmt: skip
            for name, value in (parameters or {}).items():
                command += ["--request-parameter", f"{name}:{value}:{'string' if isinstance(value, str) else 'int'}"]
            ran = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
                                 check=False)  # fmt: skip
            if ran.returncode != 0 or not results.exists():
                tail = "\n".join((ran.stdout + ran.stderr).strip().splitlines()[-6:])
                raise MCDropError(
                    f"perf_analyzer failed ({ran.returncode}) on {service_kind} {protocol} {url}:\n{tail}"
                )
            with results.open() as handle:
                rows = list(csv.DictReader(handle))
        found = [
            {
                "concurrency": int(row["Concurrency"]),
                "throughput_rps": float(row["Inferences/Second"]) / batch,
                "median_ms": float(row["p50 latency"]) / 1e3,
                "p99_ms": float(row["p99 latency"]) / 1e3,
            }
            for row in rows
        ]
        return sorted(found, key=lambda row: row["concurrency"])  # its file is in order of throughput


def input_data(path: Path, inputs: Mapping[str, np.ndarray]) -> Path:
    """perf_analyzer's ``--input-data`` file: one stream, one step, each input's first row (it sends ``-b`` copies)."""
    data = {name: {"content": np.asarray(array[0], np.float32).reshape(-1).tolist(), "shape": list(array.shape[1:])}
            for name, array in inputs.items()}  # fmt: skip
    path.write_text(json.dumps({"data": [data]}), encoding="utf-8")
    return path
