"""Run a command that may eat the machine under a watchdog: its process group's resident memory is polled, and the
whole group is killed past a limit or a timeout, so a runaway probe cannot take the machine (or a CI run) down."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

POLL_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class GuardedRun:
    """What a guarded command did."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    """Largest sum of the group's resident memory seen at a poll (the process's own VmHWM if larger)."""
    killed: str | None
    """Why the watchdog killed it (``memory`` or ``timeout``), or None."""
    stdout: str
    stderr: str


def run_guarded(
    command: Sequence[str], *, limit_mb: float, timeout_s: float, env: dict[str, str] | None = None
) -> GuardedRun:
    """Run ``command`` in its own process group; kill the group above ``limit_mb`` resident or after ``timeout_s``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env
    )
    peak, killed = 0.0, None
    out_parts: list[str] = []
    err_parts: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_parts.append(process.stdout.read() if process.stdout else ""), daemon=True),
        threading.Thread(target=lambda: err_parts.append(process.stderr.read() if process.stderr else ""), daemon=True),
    ]
    for reader in readers:
        reader.start()
    while process.poll() is None:
        rss, hwm = _group_memory_mb(process.pid)
        peak = max(peak, rss, hwm)
        if rss > limit_mb:
            killed = "memory"
        elif time.perf_counter() - started > timeout_s:
            killed = "timeout"
        if killed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(POLL_SECONDS)
    process.wait()
    for reader in readers:
        reader.join(timeout=5)
    return GuardedRun(process.returncode, time.perf_counter() - started, peak, killed, "".join(out_parts),
                      "".join(err_parts))  # fmt: skip


def _group_memory_mb(pgid: int) -> tuple[float, float]:
    """Summed VmRSS of the group's processes, and the largest VmHWM among them, in MiB."""
    total, hwm = 0.0, 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            fields = {
                line.split(":")[0]: int(line.split()[1])
                for line in (entry / "status").read_text().splitlines()
                if line.startswith(("VmRSS:", "VmHWM:"))
            }
        except (OSError, ValueError, IndexError):
            continue
        total += fields.get("VmRSS", 0) / 1024
        hwm = max(hwm, fields.get("VmHWM", 0) / 1024)
    return total, hwm
