"""``mcdrop bench``: Keras, LiteRT, mcdrop and the FLOP limit side by side; the server beside a gRPC echo floor."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mcdrop.pipeline.cli import TRAIN_EXTRA, prepare
from mcdrop.serving.cli.arguments import names, positive_float, positive_int


def register(subcommands: Any) -> None:
    bench = subcommands.add_parser(
        "bench",
        help="measure Monte-Carlo-dropout inference side by side (Keras, LiteRT, mcdrop, gRPC server)",
        description="Every row in one run on this machine: Keras eager loop and batched, TFLite sequential, "
        "mcdrop, the deterministic floor and the FLOP limit for a 784-256-256-10 MLP and the digits CNN at "
        "T=100 (batch 1 and 32), then server latency/throughput with 1 and 2 worker processes from separate "
        "client processes next to a bare gRPC echo server, CPU seconds per 1,000 requests (from /proc), memory "
        "per worker and start-up time.",
    )
    add = bench.add_argument
    add("--json", type=Path, default=None, metavar="FILE", help="write the rows as JSON")
    add("--plot", type=Path, default=None, metavar="FILE.png", help="write a bar chart")
    add("--duration", type=positive_float, default=3.0, help="seconds per server load phase (default %(default)s)")
    add("--repeats", type=positive_int, default=50, help="timed repeats per in-process row (default %(default)s)")
    add(
        "--scoring",
        action="store_true",
        help="instead: batch-scoring rows/s in process and on a local Ray (needs mcdrop[ray]; about 3 minutes)",
    )
    add(
        "--zoo",
        action="store_true",
        help="instead: MobileNetV2, MobileNetV3Small, EfficientNetB0 and ResNet50 at 224 px (MobileNetV2 also at 160) "
        "through export (wall time, peak RSS, --mc-layers all and last), deterministic vs Monte-Carlo latency and "
        "serving memory per worker (about 30 minutes)",
    )
    add("--workdir", type=Path, default=None, metavar="DIR", help="--zoo: keep models and repository here")
    add("--zoo-family", type=names, default=None, metavar="NAME[,NAME]",
        help="--zoo: only these families (mobilenet_v2, mobilenet_v3_small, efficientnet_b0, resnet50, "
        "convnext_tiny)")  # fmt: skip
    add("--perf-analyzer", nargs="?", const="perf_analyzer", default=None, metavar="BIN",
        help="add Triton's perf_analyzer (tritonclient==2.40.0's binary; default: on PATH) beside the own load "
        "generator for the same requests, and its targets")  # fmt: skip
    add("--protocols", action="store_true",
        help="only the same request over every API (mcdrop.v1 aside: OIP and TF Serving, gRPC and REST) and "
        "perf_analyzer's rows, on the MLP")  # fmt: skip
    add("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.scoring:
        return run_scoring_bench(args)
    if args.zoo:
        return run_zoo_bench(args)
    # The Keras baselines run as TensorFlow runs by default (oneDNN kernels on): the fair comparison.
    prepare(args, *TRAIN_EXTRA, "matplotlib", strict_float32=False)
    from mcdrop.pipeline.bench.perf_analyzer import PerfAnalyzer
    from mcdrop.pipeline.bench.run import run_bench as bench

    perf_analyzer = PerfAnalyzer.find(args.perf_analyzer) if args.perf_analyzer else None
    report = bench(args.json, args.plot, duration=args.duration, repeats=args.repeats, quiet=args.quiet,
                   perf_analyzer=perf_analyzer, protocols_only=args.protocols)  # fmt: skip
    print_bench(report)
    return 0


def run_scoring_bench(args: argparse.Namespace) -> int:
    import json

    from mcdrop.serving.cli.arguments import require_extra

    require_extra("ray", "ray", "pyarrow")
    prepare(args, *TRAIN_EXTRA)
    from rich.table import Table

    from mcdrop.pipeline.bench.scoring import scoring_bench
    from mcdrop.serving.common.console import stderr, stdout_console

    report = scoring_bench(lambda step: None if args.quiet else stderr.print(f"[dim]scoring bench: {step}[/]"))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = Table(title=f"batch scoring · digits · T={report['samples']} · {report['batch_size']} rows per unit")
    for column in ("run", "workers", "rows", "seconds", "rows/s", "nodes"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for r in report["rows"]:
        table.add_row(r["name"], str(r.get("workers", "")), f"{r['rows']:,}", f"{r['seconds']:.2f}",
                      f"{r['rows_per_second']:,.0f}", str(r.get("nodes", "")))  # fmt: skip
    console = stdout_console()
    console.print(table)
    for target in report["targets"]:
        met = "" if "met" not in target else (" [green]met[/]" if target["met"] else " [red]not met[/]")
        bound = f" (≥ {target['at_least']})" if "at_least" in target else ""
        console.print(f"{target['target']}: {target['value']}{bound}{met}")
    return 0


def run_zoo_bench(args: argparse.Namespace) -> int:
    import json
    import tempfile

    prepare(args, *TRAIN_EXTRA, strict_float32=False)  # Keras baselines as TensorFlow runs by default
    from mcdrop.pipeline.bench.zoo_bench import zoo_bench
    from mcdrop.serving.common.console import stderr

    with tempfile.TemporaryDirectory(prefix="mcdrop-zoo-") as scratch:
        workdir = args.workdir or Path(scratch)
        from mcdrop.pipeline.bench import zoo

        families = tuple(args.zoo_family or zoo.FAMILIES)
        unknown = [f for f in families if f not in zoo.FAMILIES]
        if unknown:
            from mcdrop.serving.errors import InvalidArgument

            raise InvalidArgument(
                f"Unknown --zoo-family {', '.join(unknown)}. Expected any of {', '.join(zoo.FAMILIES)}."
            )
        report = zoo_bench(workdir, lambda step: None if args.quiet else stderr.print(f"[dim]zoo bench: {step}[/]"),
                           families=families)  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_zoo_bench(report)
    return 0


def print_zoo_bench(report: dict[str, Any]) -> None:
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

    console = stdout_console()
    table = Table(title=f"mcdrop bench --zoo · T={report['samples']} · B=1 · default settings")
    columns = ("model", "px", "mc-layers", "export s", "export peak MB", "graphs MB", "sampled", "MB/sample row",
               "det ms", "MC ms", "MC/det", "serve loaded MB", "serve peak MB")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "mc-layers") else "right")
    for r in report["rows"]:
        if not r.get("exported"):
            table.add_row(r["family"], str(r["size"]), r["mc_layers"], str(r["export_wall_s"]),
                          str(r["export_peak_rss_mb"]), f"[red]{r.get('error', 'failed')}[/]")  # fmt: skip
            continue
        graphs = "/".join(f"{v:g}" for v in r["graph_mb"].values())
        sampled = f"{r['sampled_sites']}/{r['sampled_sites'] + r['unsampled_sites']}"
        table.add_row(r["family"], str(r["size"]), r["mc_layers"], f"{r['export_wall_s']:.0f}",
                      f"{r['export_peak_rss_mb']:,}", graphs, sampled, f"{r['activation_mb_per_sample_row']:.2f}",
                      f"{r['deterministic_ms']:.1f}", f"{r['mc_ms']:.1f}", f"{r['mc_over_deterministic']:.2f}",
                      str(r.get("serving_loaded_rss_mb", "")), str(r.get("serving_peak_rss_mb", "")))  # fmt: skip
    console.print(table)
    print_zoo_variants(report, console)
    for r in report["rows"]:
        if "keras_batched_ms" in r:
            console.print(f"{r['name']}: keras_batched {r['keras_batched_ms']:.0f} ms vs mcdrop MC {r['mc_ms']:.0f} ms")
    for v in report["verdicts"]:
        value = f" ({v['value']})" if "value" in v else ""
        console.print(f"{v['target']}{value}: " + ("[green]met[/]" if v["met"] else "[red]not met[/]"))


def print_zoo_variants(report: dict[str, Any], console: Any) -> None:
    """Each quantised variant beside float32: what it costs (file, latency ratios) and keeps (agreement)."""
    from rich.table import Table

    rows = [r for r in report["rows"] if r.get("variants")]
    if not rows:
        return
    table = Table(title=f"variants (--mc-layers last) · latency T={report['samples']}, B=1, timed alternately with "
                        "float32 · agreement on the verification rows")  # fmt: skip
    columns = ("model", "variant", "det. graph MB", "det ms", "MC ms", "top-1", "max |Δp|", "MI ρ", "OOD AUROC")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for r in rows:
        table.add_row(r["family"], "float32", f"{r['graph_mb']['deterministic']:g}", f"{r['deterministic_ms']:.1f}",
                      f"{r['mc_ms']:.1f}", "", "", "", "")  # fmt: skip
        for name, v in r["variants"].items():
            t = r.get("variant_latency", {}).get(name, {})
            auroc = "—" if v["ood_auroc"] is None else f"{v['ood_auroc_float32']:.3f} → {v['ood_auroc']:.3f}"
            table.add_row("", name, f"{v['file_mb']:g} ({v['size_ratio']:.0%})",
                          f"{t.get('deterministic_ms', float('nan')):.1f} ({t.get('deterministic_ratio', 0):.2f}×)",
                          f"{t.get('mc_ms', float('nan')):.1f} ({t.get('mc_ratio', 0):.2f}×)",
                          _fmt(v["top1_agreement"]), _fmt(v["max_abs_diff"]), _fmt(v["mi_spearman"]),
                          auroc)  # fmt: skip
    console.print(table)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def print_bench(report: dict[str, Any]) -> None:
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

    console = stdout_console()
    table = Table(title=f"mcdrop bench · T={report['settings']['samples']} · one thread per row · medians")
    for column in ("row", "model", "batch", "median ms", "p99 ms", "ratios"):
        table.add_column(column, justify="left" if column in ("row", "model", "ratios") else "right")
    for r in report["rows"]:
        ratios = ", ".join(f"{k.removeprefix('ratio_to_')} {v:.3f}" for k, v in r.items() if k.startswith("ratio_to_"))
        name = r["name"] + (f" c={r['concurrency']}" if "concurrency" in r else "")
        name += f" w={r['workers']}" if "workers" in r else ""
        p99 = f"{r['p99_ms']:.3f}" if "p99_ms" in r else ""
        if "throughput_rps" in r:
            cpu = f", {r['cpu_s_per_1000']:.2f} CPU s/1000 req" if "cpu_s_per_1000" in r else ""
            ratios = f"{r['throughput_rps']:.0f} req/s{cpu}" + (f", {ratios}" if ratios else "")
        table.add_row(name, r["model"], str(r["batch"]), f"{r['median_ms']:.3f}", p99, ratios)
    console.print(table)
    targets = Table(title="targets")
    for column in ("target", "value", "bound", "met"):
        targets.add_column(column)
    for t in report["targets"]:
        bound = " and ".join(part for part in (f"≥ {t['at_least']:g}" if "at_least" in t else "",
                                               f"≤ {t['at_most']:g}" if "at_most" in t else "") if part)  # fmt: skip
        targets.add_row(t["target"], f"{t['value']:.3f}", bound, "[green]yes[/]" if t["met"] else "[red]no[/]")
    console.print(targets)
    if "process" not in report:  # --protocols
        console.print(f"whole run {report['seconds']} s")
        return
    process = report["process"]
    server = ", ".join(f"{k}={v}" for k, v in report["settings"]["server"].items())
    console.print(
        f"server ({server}): peak RSS {process['peak_rss_mb']:.1f} MB (per worker, at most "
        f"{process['peak_rss_mb_per_worker']:.1f} MB), ready in {process['ready_seconds']} s (one worker), "
        + ", ".join(f"{w} workers {v['ready_seconds_median']:.2f} s" for w, v in process["by_workers"].items())
        + f"; whole run {report['seconds']} s"
    )
