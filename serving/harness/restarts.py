"""``mcdrop soak --kill-worker-every``: kill a random worker of ``mcdrop serve --workers N`` on a schedule and
measure how the server recovers — throughput and each worker's share of the CPU before and after every kill.

The question is the one Kubernetes asks every day (rolling restarts, OOM kills): after a worker dies and the
supervisor restarts it, does the new worker get its share of the clients back? Clients keep their connections, so
without connection ageing they all stay on the survivor (see ``docs/restarts.md``). The recovery check: within
``RECOVERY_SECONDS`` of each kill there is a ``WINDOW``-second window in which every worker used at least
``MIN_CPU_SHARE`` of the workers' CPU and the throughput was at least ``MIN_THROUGHPUT_RATIO`` of the ``BEFORE``
seconds before the kill. The ``AFTER`` window's figures are reported too.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import os
import random
import signal
import time
from typing import Any

from mcdrop.serving.harness.measure import cpu_seconds, worker_pids

__all__ = ["AFTER", "BEFORE", "MIN_CPU_SHARE", "MIN_KILL_INTERVAL", "MIN_THROUGHPUT_RATIO", "RECOVERY_SECONDS",
           "WINDOW", "WorkerKiller", "balance", "recovery"]  # fmt: skip

BEFORE = (-10.0, 0.0)
"""Seconds relative to a kill over which 'before' is measured."""
AFTER = (20.0, 30.0)
"""Seconds relative to a kill over which 'after' is measured: the server must have recovered within 30 s."""
RECOVERY_SECONDS = 30.0
WINDOW = 5.0
MIN_KILL_INTERVAL = AFTER[1] - BEFORE[0]
"""Kills closer than this would overlap one kill's 'after' with the next one's 'before'."""
MIN_CPU_SHARE = 0.35
MIN_THROUGHPUT_RATIO = 0.9


@dataclasses.dataclass
class WorkerKiller:
    """SIGKILLs a random worker of ``supervisor`` every ``every`` seconds from ``start``, and samples every
    worker's CPU time (user + system) whenever :meth:`tick` is called."""

    supervisor: int
    workers: int
    every: float
    start: float
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))
    kills: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cpu: list[tuple[float, dict[int, float]]] = dataclasses.field(default_factory=list)

    def tick(self) -> None:
        """Sample the workers' CPU; kill one if its time has come (never before the first ``every`` seconds)."""
        now = time.time()
        pids = worker_pids(self.supervisor, self.workers, timeout=0)
        self.cpu.append((now, {pid: cpu_seconds([pid]) for pid in pids}))
        if now >= self.start + self.every * (len(self.kills) + 1) and pids:
            victim = self.rng.choice(pids)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
                self.kills.append({"at": now, "pid": victim})


def recovery(killer: WorkerKiller, completions: list[float]) -> list[dict[str, Any]]:
    """For every kill: throughput (completed requests/s, from the clients' sorted completion times) and each
    worker's share of the workers' CPU, ``BEFORE`` and ``AFTER``; ``recovered`` when both meet their bound.

    A kill whose 'after' window was not fully observed (the soak ended first) is reported with ``recovered: None``.
    """
    end = completions[-1] if completions else 0.0
    reports = []
    for kill in killer.kills:
        at = kill["at"]
        before = _throughput(completions, at + BEFORE[0], at + BEFORE[1])
        after = _throughput(completions, at + AFTER[0], at + AFTER[1])
        shares_before = _cpu_shares(killer.cpu, at + BEFORE[0], at + BEFORE[1])
        shares_after = _cpu_shares(killer.cpu, at + AFTER[0], at + AFTER[1])
        ratio = after / before if before else float("nan")
        observed = end >= at + RECOVERY_SECONDS
        recovered_after = _recovered_after(killer, completions, at, before)
        reports.append(
            {
                "at_seconds": round(at - killer.start, 1),
                "killed_pid": kill["pid"],
                "throughput_before_rps": before,
                "throughput_after_rps": after,
                "throughput_ratio": ratio,
                "cpu_share_before": _by_worker(shares_before),
                "cpu_share_after": _by_worker(shares_after),
                "recovered_after_seconds": recovered_after,
                "recovered": (recovered_after is not None) if observed else None,
            }
        )
    return reports


def balance(killer: WorkerKiller, window: float = 10.0) -> dict[str, Any]:
    """How evenly the workers shared the CPU over the whole run, kills or not: of the ``window``-second windows ending
    at each CPU sample, the share in which every worker had ``MIN_CPU_SHARE``, and the smallest share seen.

    Clients keep their connections and the kernel places each new one on a worker at random (SO_REUSEPORT hashes
    the connection's addresses), so with few clients a worker can carry most of them for a connection age or two
    even without any kill: this figure tells that apart from a slow recovery."""
    start = killer.cpu[0][0] if killer.cpu else 0.0
    shares = [_cpu_shares(killer.cpu, t - window, t) for t, _ in killer.cpu if t - window >= start]
    full = [min(s.values()) for s in shares if len(s) == killer.workers]
    return {"windows": len(full), "balanced_fraction": sum(m >= MIN_CPU_SHARE for m in full) / len(full) if full
            else None, "smallest_share": min(full, default=None)}  # fmt: skip


def _throughput(completions: list[float], start: float, end: float) -> float:
    return (bisect.bisect_left(completions, end) - bisect.bisect_left(completions, start)) / (end - start)


def _cpu_shares(samples: list[tuple[float, dict[int, float]]], start: float, end: float) -> dict[int, float]:
    """Each worker's share of the CPU all workers used between the samples nearest ``start`` and ``end``; a worker
    that did not live through the whole window is left out."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return {}
    first, last = inside[0][1], inside[-1][1]
    used = {pid: last[pid] - first[pid] for pid in last if pid in first}
    total = sum(used.values())
    return {pid: value / total for pid, value in used.items()} if total > 0 else {}


def _recovered_after(killer: WorkerKiller, completions: list[float], at: float, before: float) -> float | None:
    """Seconds from the kill to the end of the first ``WINDOW``-second window (ending at a CPU sample within
    ``RECOVERY_SECONDS``) in which every worker had ``MIN_CPU_SHARE`` and throughput was back to
    ``MIN_THROUGHPUT_RATIO`` of ``before``; None if there was none."""
    for t, _ in killer.cpu:
        if not at + WINDOW <= t <= at + RECOVERY_SECONDS:
            continue
        shares = _cpu_shares(killer.cpu, t - WINDOW, t)
        balanced = len(shares) == killer.workers and min(shares.values()) >= MIN_CPU_SHARE
        if balanced and _throughput(completions, t - WINDOW, t) >= MIN_THROUGHPUT_RATIO * before:
            return round(t - at, 1)
    return None


def _by_worker(shares: dict[int, float]) -> list[float]:
    return [round(share, 3) for _, share in sorted(shares.items())]
