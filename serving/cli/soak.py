"""``mcdrop soak``: client processes against a server for minutes; errors, RSS growth, latency drift."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mcdrop.serving.cli.arguments import positive_float, positive_int

__all__ = ["register"]


def register(subcommands: Any) -> None:
    soak = subcommands.add_parser(
        "soak",
        help="N client processes against a server for M minutes: errors, RSS growth, latency drift",
        description="Starts a server on REPO (or uses --server), then runs --clients processes of mixed requests "
        "for --minutes (at most --max-requests in all). Exit code 1 unless: zero errors, RSS growth within "
        "--max-rss-growth-mb, last-quarter median latency within --max-latency-drift of the first quarter's.",
    )
    group = soak.add_mutually_exclusive_group(required=True)
    group.add_argument("--repository", type=Path, default=None, metavar="REPO", help="start a server on REPO")
    group.add_argument("--server", default=None, metavar="HOST:PORT", help="soak a running server (no RSS figures)")
    add = soak.add_argument
    add("--model", default="digits", help="model to query (default %(default)s)")
    add("--clients", type=positive_int, default=8, help="client processes (default %(default)s)")
    add("--minutes", type=positive_float, default=2.0, help="duration (default %(default)s)")
    add("--max-requests", type=positive_int, default=1_000_000, help="request budget (default %(default)s)")
    add("--max-rss-growth-mb", type=float, default=20.0, help="allowed RSS growth (default %(default)s)")
    add("--max-latency-drift", type=float, default=0.5, help="relative, e.g. 0.5 = 50%% (default %(default)s)")
    add("--workers", type=positive_int, default=None, help="--repository: server processes (default: mcdrop serve's)")
    add("--capture-when", default=None, metavar="RULE",
        help="--repository: capture into a temporary directory (always, abstain, SCORE>VALUE) and check that every "
        "served row was captured or counted as dropped")  # fmt: skip
    add(
        "--kill-worker-every",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="--repository: SIGKILL a random worker every SECONDS (>= 40; --workers defaults to 2) and check that "
        "within 30 s of each kill every worker has >= 35%% of the workers' CPU and throughput is >= 90%% of before",
    )
    add("--json", type=Path, default=None, metavar="FILE", help="write the report as JSON")
    soak.set_defaults(handler=run_soak)


def run_soak(args: argparse.Namespace) -> int:
    from mcdrop.serving.common.console import stdout_console
    from mcdrop.serving.harness.soak import soak

    report = soak(
        repository=args.repository,
        server=args.server,
        model=args.model,
        clients=args.clients,
        minutes=args.minutes,
        max_requests=args.max_requests,
        max_rss_growth_mb=args.max_rss_growth_mb,
        max_latency_drift=args.max_latency_drift,
        workers=args.workers,
        capture_when=args.capture_when,
        kill_worker_every=args.kill_worker_every,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console = stdout_console()
    latency, rss = report["latency_ms"], report["rss_mb"]
    console.print(
        f"soak: {report['clients']} clients x {report['seconds']:.0f} s: {report['requests']} requests "
        f"({report['throughput_rps']:.0f}/s), {report['errors']} errors; latency p50 {latency['p50']:.2f} ms, "
        f"p99 {latency['p99']:.2f} ms, first/last-quarter p50 {latency['first_quarter_p50']:.2f}/"
        f"{latency['last_quarter_p50']:.2f} ms; RSS start {_mb(rss['start'])}, end {_mb(rss['end'])}"
    )
    if "capture" in report:
        c = report["capture"]
        console.print(
            f"capture: {c['served_rows']} rows served, {c['captured_rows']} captured in {c['files']} files "
            f"({c['megabytes']:.1f} MB), {c['dropped_rows']} dropped (counted), {c['unaccounted_rows']} unaccounted"
        )
    for kill in report.get("restarts", []):
        console.print(
            f"kill at {kill['at_seconds']:.0f} s (pid {kill['killed_pid']}): throughput "
            f"{kill['throughput_before_rps']:.0f} -> {kill['throughput_after_rps']:.0f}/s "
            f"({kill['throughput_ratio']:.0%}), CPU shares "
            f"{_shares(kill['cpu_share_before'])} -> {_shares(kill['cpu_share_after'])} (10 s before, 20-30 s after); "
            f"recovered after {_seconds(kill['recovered_after_seconds'])}"
        )
    if "balance" in report and report["balance"]["windows"]:
        b = report["balance"]
        console.print(
            f"balance: every worker had >= 35% of the CPU in {b['balanced_fraction']:.0%} of {b['windows']} 10-s "
            f"windows (smallest share {b['smallest_share']:.0%})"
        )
    for name, ok in report["checks"].items():
        console.print(f"  {'[green]pass[/]' if ok else '[red]FAIL[/]'} {name}")
    return 0 if report["passed"] else 1


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} MB"


def _shares(shares: list[float]) -> str:
    return "/".join(f"{share:.0%}" for share in shares) or "n/a"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"
