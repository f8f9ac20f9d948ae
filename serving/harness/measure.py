"""Measuring a server process from outside, for bench, soak and the tests: its memory and CPU time, and the worker
processes of ``mcdrop serve --workers`` (timing helpers: ``mcdrop.serving.common.timing``)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from mcdrop.serving.errors import MCDropError

__all__ = ["cpu_seconds", "memory_mb", "worker_pids"]


def memory_mb(pid: int) -> dict[str, float]:
    """Resident set size now (``rss``) and its peak so far (``peak``) of a Linux process, in MiB.

    Raises:
        MCDropError: the process is gone or ``/proc`` does not report it.
    """
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MCDropError(f"Cannot read the memory of process {pid}: {exc}") from None
    fields = {line.split(":")[0]: line.split()[1] for line in lines if line.startswith(("VmRSS:", "VmHWM:"))}
    if set(fields) != {"VmRSS", "VmHWM"}:
        raise MCDropError(f"/proc/{pid}/status reports no VmRSS/VmHWM")
    return {"rss": int(fields["VmRSS"]) / 1024, "peak": int(fields["VmHWM"]) / 1024}


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time the processes used so far (``/proc/PID/stat`` fields 14 and 15); gone ones count 0."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def worker_pids(supervisor: int, expected: int, timeout: float = 30.0) -> list[int]:
    """The worker processes (``multiprocessing`` spawn children) of a ``mcdrop serve`` supervisor, sorted: as soon as
    ``expected`` of them run, or whatever runs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        workers = sorted(pid for pid in _children(supervisor) if b"multiprocessing.spawn" in _command_line(pid))
        if len(workers) == expected or time.monotonic() > deadline:
            return workers
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/PID/task/TID/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
