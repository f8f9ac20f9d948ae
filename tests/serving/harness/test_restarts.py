"""``mcdrop soak --kill-worker-every``: the recovery figures on made-up timelines, and a real kill under load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.harness.restarts import WorkerKiller, balance, recovery
from tests.helpers import run_cli


def timeline(shares_after: list[tuple[float, float]], rps_after: float) -> tuple[WorkerKiller, list[float]]:
    """Two workers at 50/50 and 100 requests/s for 30 s; a kill at t = 30 (worker 1 replaced by worker 3); then one
    (share, share) pair and ``rps_after`` per second for 40 s."""
    killer = WorkerKiller(supervisor=0, workers=2, every=30, start=0.0)
    cpu = {1: 0.0, 2: 0.0}
    for t in range(31):
        killer.cpu.append((float(t), dict(cpu)))
        cpu = {1: cpu[1] + 0.5, 2: cpu[2] + 0.5}
    killer.kills.append({"at": 30.0, "pid": 1})
    cpu = {2: cpu[2], 3: 0.0}
    for t, (survivor, restarted) in zip(range(31, 71), shares_after, strict=True):
        cpu = {2: cpu[2] + survivor, 3: cpu[3] + restarted}
        killer.cpu.append((float(t), dict(cpu)))
    completions = [*np.arange(0, 30, 0.01), *np.arange(30, 70, 1 / rps_after)]
    return killer, [float(c) for c in completions]


def test_recovery_is_the_first_balanced_window_with_throughput_back() -> None:
    stuck = [(0.98, 0.02)] * 12 + [(0.5, 0.5)] * 28  # all clients on the survivor for 12 s, then spread again
    killer, completions = timeline(stuck, rps_after=100)
    (kill,) = recovery(killer, completions)
    # The 5 s window ending 16 s after the kill holds one stuck second: 0.02 + 4 x 0.5 of 5 = 40 % >= 35 %.
    assert kill["recovered"] and kill["recovered_after_seconds"] == 16.0
    assert kill["throughput_before_rps"] == pytest.approx(100, rel=0.02)
    assert kill["cpu_share_after"] == [0.5, 0.5] and kill["cpu_share_before"] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("shares", "rps"),
    [([(0.98, 0.02)] * 40, 100), ([(0.5, 0.5)] * 40, 80)],  # never rebalanced; balanced but throughput at 80 %
    ids=["never-balanced", "throughput-short"],
)
def test_no_recovery_within_30_s(shares: list[tuple[float, float]], rps: float) -> None:
    killer, completions = timeline(shares, rps_after=rps)
    (kill,) = recovery(killer, completions)
    assert kill["recovered"] is False and kill["recovered_after_seconds"] is None


def test_balance_counts_windows_where_every_worker_had_its_share() -> None:
    killer, _ = timeline([(0.98, 0.02)] * 20 + [(0.5, 0.5)] * 20, rps_after=100)
    figures = balance(killer)
    # Windows that span the kill leave out the killed worker: 21 before it, 30 after. After it, a 10 s window needs
    # 7 balanced seconds for 35 % (0.02 x 3 + 0.5 x 7 = 3.56 of 10): the 14 ending 57-70 s.
    assert figures["windows"] == 21 + 30 and figures["balanced_fraction"] == pytest.approx((21 + 14) / 51)
    assert figures["smallest_share"] == pytest.approx(0.02)


@pytest.mark.slow
def test_soak_kills_a_worker_and_nothing_fails(model_repository: Path, tmp_path: Path) -> None:
    """One kill 40 s in, under 4 clients with the client's retry policy and stream resumption: zero failed
    requests, the supervisor restarts the worker, and the figures of the kill are reported."""
    out = tmp_path / "soak.json"
    result = run_cli("soak", "--repository", str(model_repository), "--clients", "4", "--minutes", "1.2",
                     "--kill-worker-every", "40", "--json", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    assert report["errors"] == 0, report["error_examples"]
    (kill,) = report["restarts"]
    assert 39 <= kill["at_seconds"] <= 45 and kill["throughput_before_rps"] > 0 and kill["recovered"] is not None
    assert len(kill["cpu_share_after"]) == 2  # the restarted worker and the survivor both ran through 20-30 s
    assert report["balance"]["windows"] > 30
    assert f"kill at {kill['at_seconds']:.0f} s" in result.stdout and result.returncode in (0, 1)
    assert result.returncode == (0 if report["passed"] else 1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "1", "--kill-worker-every", "60"], "--kill-worker-every needs --workers 2 or more"),
        (["--kill-worker-every", "30"], "Expected --kill-worker-every >= 40 s"),
    ],
)
def test_soak_refuses_a_kill_schedule_it_cannot_measure(tmp_path: Path, flags: list[str], message: str) -> None:
    result = run_cli("soak", "--repository", str(tmp_path), *flags)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
