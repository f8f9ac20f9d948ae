"""How many CPUs this process may use: the default for ``--workers`` and ``--lone-request-threads``."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

__all__ = ["resolve", "usable_cpus"]

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a container's CPU limit)."""
    count = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = CGROUP_CPU_MAX.read_text(encoding="utf-8").split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    return count


def resolve(workers: int) -> int:
    """The number of worker processes a ``workers`` setting asks for (0 = one per usable CPU)."""
    return workers if workers > 0 else usable_cpus()
