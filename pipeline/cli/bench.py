"""``mcdrop bench``: Keras, LiteRT, mcdrop and the FLOP limit side by side; the server beside a gRPC echo floor."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mcdrop.pipeline.cli import TRAIN_EXTRA, prepare
from mcdrop.serving.cli.arguments import positive_float, positive_int


def register(subcommands: Any) -> None:
    bench = subcommands.add_parser(
        "bench",
        help="measure Monte-Carlo-dropout inference side by side (Keras, LiteRT, mcdrop, gRPC server)",
        description="Every row in one run on this machine: Keras eager loop and batched, TFLite sequential, "
        "mcdrop, the deterministic floor and the FLOP limit for a 784-256-256-10 MLP and the digits CNN at "
        "T=100 (batch 1 and 32), then server latency/throughput from separate client processes next to a "
        "bare gRPC echo server, server memory and start-up time.",
    )
    add = bench.add_argument
    add("--json", type=Path, default=None, metavar="FILE", help="write the rows as JSON")
    add("--plot", type=Path, default=None, metavar="FILE.png", help="write a bar chart")
    add("--duration", type=positive_float, default=3.0, help="seconds per server load phase (default %(default)s)")
    add("--repeats", type=positive_int, default=50, help="timed repeats per in-process row (default %(default)s)")
    add("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    prepare(args, *TRAIN_EXTRA, "matplotlib")
    from mcdrop.pipeline.bench.run import run_bench as bench

    report = bench(args.json, args.plot, duration=args.duration, repeats=args.repeats, quiet=args.quiet)
    print_bench(report)
    return 0


def print_bench(report: dict[str, Any]) -> None:
    from rich.table import Table

    from mcdrop.serving.console import stdout_console

    console = stdout_console()
    table = Table(title=f"mcdrop bench · T={report['settings']['samples']} · one thread per row · medians")
    for column in ("row", "model", "batch", "median ms", "p99 ms", "ratios"):
        table.add_column(column, justify="left" if column in ("row", "model", "ratios") else "right")
    for r in report["rows"]:
        ratios = ", ".join(f"{k.removeprefix('ratio_to_')} {v:.3f}" for k, v in r.items() if k.startswith("ratio_to_"))
        name = r["name"] + (f" c={r['concurrency']}" if "concurrency" in r else "")
        p99 = f"{r['p99_ms']:.3f}" if "p99_ms" in r else ""
        if "throughput_rps" in r:
            ratios = f"{r['throughput_rps']:.0f} req/s" + (f", {ratios}" if ratios else "")
        table.add_row(name, r["model"], str(r["batch"]), f"{r['median_ms']:.3f}", p99, ratios)
    console.print(table)
    targets = Table(title="targets")
    for column in ("target", "value", "at most", "met"):
        targets.add_column(column)
    for t in report["targets"]:
        targets.add_row(
            t["target"], f"{t['value']:.3f}", f"{t['at_most']:g}", "[green]yes[/]" if t["met"] else "[red]no[/]"
        )
    console.print(targets)
    process = report["process"]
    server = ", ".join(f"{k}={v}" for k, v in report["settings"]["server"].items())
    console.print(
        f"server ({server}): peak RSS {process['peak_rss_mb']:.1f} MB, ready in {process['ready_seconds']} s; "
        f"whole run {report['seconds']} s"
    )
