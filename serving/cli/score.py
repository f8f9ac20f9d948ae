"""``mcdrop score``: offline scoring with uncertainty over Parquet/CSV/.npy, in process or on Ray."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from mcdrop.serving.cli.arguments import names, positive_float, positive_int, require_extra

__all__ = ["register"]


def register(subcommands: Any) -> None:
    score = subcommands.add_parser(
        "score",
        help="score a table (Parquet, CSV, .npy) with uncertainty, in process or on a Ray cluster",
        description="Run every row of --input through the model's exported graphs (LiteRT; no TensorFlow) and "
        "write predictions with uncertainty to --output (Parquet, or CSV if it ends in .csv). With --seed S a "
        "row's masks depend only on S and its position in the input: any partitioning, worker count or retry "
        "gives bit-identical output. Without --seed a fresh seed is drawn and recorded in the output.",
    )
    add = score.add_argument
    add("--repository", "--repo", type=Path, required=True, metavar="REPO", help="model repository")
    add("--model", required=True, help="model name")
    add("--version", type=positive_int, default=None, help="model version (default: the newest)")
    add("--input", required=True, metavar="PATH", help="a .parquet/.csv/.npy file, a folder of them, or a glob")
    add("--output", type=Path, required=True, metavar="PATH", help="output .parquet or .csv")
    add("--samples", type=positive_int, default=None, metavar="T", help="MC samples (default: the model's)")
    add("--seed", type=int, default=None, help="makes the output reproducible (default: fresh, recorded)")
    add(
        "--mode",
        choices=("monte_carlo", "deterministic", "moments"),
        default=None,
        help="default: monte_carlo with dropout; moments: one pass of the moments graph (an approximation)",
    )
    add("--interval", type=positive_float, default=0.95, help="regression interval level (default %(default)s)")
    add("--keep", type=names, default=[], metavar="COL[,COL]", help="input columns copied to the output")
    add("--batch-size", type=positive_int, default=1024, help="rows per work unit (default %(default)s)")
    add(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="score on Ray: a local Ray without ADDRESS, else the cluster at ADDRESS (needs mcdrop[ray])",
    )
    add(
        "--workers",
        type=positive_int,
        default=None,
        help="threads in process (default 1), Ray actors with --ray (default 2)",
    )
    add("--threads", type=positive_int, default=1, help="LiteRT threads per worker (default %(default)s)")
    add(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="a bad row stops the job (default) or goes to OUTPUT.errors.parquet",
    )
    add("--variant", default="float32", metavar="NAME",
        help="the exported graphs that score: float32 (default) or a variant the version was exported with "
             "(mcdrop export --quantize: float16, dynamic-int8, int8, int8-io)")  # fmt: skip
    add("--quiet", action="store_true", help="no progress bar")
    add("--json", action="store_true", help="print the summary as JSON")
    score.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    require_extra("score", "pyarrow")
    if args.ray is not None:
        require_extra("ray", "ray")
    from mcdrop.serving.common.console import progress_bar, stdout_console
    from mcdrop.serving.scoring.job import ScoreOptions, run_score

    options = ScoreOptions(
        repository=args.repository, model=args.model, input=args.input, output=args.output, version=args.version,
        samples=args.samples, seed=args.seed, mode=args.mode, interval=args.interval, keep=tuple(args.keep),
        batch_size=args.batch_size, ray=args.ray, workers=args.workers, on_error=args.on_error, threads=args.threads,
        variant=args.variant,
    )  # fmt: skip
    from mcdrop.serving.common.console import stderr

    if args.quiet or args.json or not stderr.is_terminal:
        summary = run_score(options)
    else:
        with progress_bar(transient=True) as bar:
            task = bar.add_task("scoring", total=None, status="")
            summary = run_score(options, lambda done, total: bar.update(task, completed=done, total=total))
    record = {**dataclasses.asdict(summary), "rows_per_second": round(summary.rows_per_second, 1)}
    if args.json:
        json.dump(record, sys.stdout, indent=2)
        print()
        return 0
    from rich.table import Table

    table = Table(
        title=f"{summary.model} v{summary.version} · {summary.mode} · T={summary.samples} · seed {summary.seed}"
        + ("" if summary.variant == "float32" else f" · {summary.variant}")
    )
    for column in ("rows in", "scored", "failed", "rows/s", "workers", "nodes", "backend"):
        table.add_column(column, justify="right")
    counts = (summary.rows_in, summary.rows_scored, summary.rows_failed)
    rate = f"{summary.rows_per_second:,.0f}"
    table.add_row(*(f"{n:,}" for n in counts), rate, str(summary.workers), str(summary.nodes), summary.backend)
    console = stdout_console()
    console.print(table)
    console.print(
        f"written: {summary.output}" + (f"; bad rows: {summary.errors_output}" if summary.errors_output else "")
    )
    return 0
