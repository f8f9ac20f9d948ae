"""Subcommands of the pipeline: ``train`` and ``demo``.

Importing this module is cheap (no TensorFlow); each handler imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.config import parse_float_list, parse_int_list
from serving.errors import InvalidArgument

DEFAULT_DEMO_DIR = "demo-output"


def register(subcommands: Any) -> None:
    """Add the pipeline's subcommands to the ``mcdrop`` parser."""
    train = subcommands.add_parser(
        "train",
        help="train a Keras dropout model (MLP or CNN)",
        description="Train a Keras 3 dropout model. Settings come from --config (TOML) and flags; flags win.",
    )
    add_train_arguments(train)
    train.set_defaults(handler=run_train)

    export = subcommands.add_parser(
        "export",
        help="export a Keras model with dropout to verified LiteRT graphs in a model repository",
        description="Convert MODEL.keras into deterministic, mc and mc_masked LiteRT graphs, verify them "
        "numerically and publish them atomically as REPO/NAME/<next version>/.",
    )
    export.add_argument("model", metavar="MODEL.keras", help="a Keras 3 model file (Sequential or functional)")
    export.add_argument("--repository", "--repo", required=True, metavar="REPO", help="model repository directory")
    export.add_argument("--name", required=True, help="model name in the repository")
    export.add_argument("--samples", type=int, default=100, help="default T recorded in the manifest (default 100)")
    export.add_argument(
        "--quantize", type=_names, default=[], metavar="KIND[,KIND]", help="also export float16 and/or dynamic-int8"
    )
    export.add_argument("--task", default=None, help="classification or regression (default: from training.json)")
    export.add_argument("--labels", type=_names, default=None, metavar="A,B,..", help="class labels")
    export.add_argument("--seed", type=int, default=0, help="seed of the verification inputs and masks")
    export.add_argument("--quiet", action="store_true", help="no progress display")
    export.add_argument("--json", action="store_true", help="print the manifest as JSON")
    export.set_defaults(handler=run_export)

    batch = subcommands.add_parser(
        "export-batch",
        help="train and export many models from a TOML job (resumable)",
        description="Run every [[entry]] of JOB.toml: train (optionally choosing settings by k-fold "
        "cross-validation) and export. Finished entries are skipped on a rerun; a failing entry does not "
        "stop the job; the exit code is 1 if any entry failed.",
    )
    batch.add_argument("job", metavar="JOB.toml")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.add_argument("--json", action="store_true", help="print the results as JSON")
    batch.set_defaults(handler=run_export_batch)

    bench = subcommands.add_parser(
        "bench",
        help="measure Monte-Carlo-dropout inference side by side (Keras, LiteRT, mcdrop, gRPC server)",
        description="Every row in one run on this machine: Keras eager loop and batched, TFLite sequential, "
        "mcdrop, the deterministic floor and the FLOP limit for a 784-256-256-10 MLP and the digits CNN at "
        "T=100 (batch 1 and 32), then server latency/throughput from separate client processes next to a "
        "bare gRPC echo server, server memory and start-up time.",
    )
    bench.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the rows as JSON")
    bench.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="write a bar chart")
    bench.add_argument("--duration", type=float, default=3.0, help="seconds per server load phase (default 3)")
    bench.add_argument("--repeats", type=int, default=50, help="timed repeats per in-process row (default 50)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(handler=run_bench)

    evaluate = subcommands.add_parser(
        "evaluate",
        help="measure the quality of the deployed uncertainty (calibration, OOD, UCI reproduction)",
        description="Train, export and evaluate through the exported LiteRT graphs. --suite digits: accuracy, "
        "NLL, Brier, ECE (weight scaling vs MC), OOD AUROC (train 0-4, score 5-9), MC averaging vs weight "
        "scaling. --suite uci: Gal & Ghahramani's UCI regression protocol, printed beside the paper's table.",
    )
    evaluate.add_argument("--suite", choices=["digits", "uci"], required=True)
    evaluate.add_argument(
        "--dataset", type=_names, default=None, metavar="NAME[,NAME]", help="UCI datasets (default: all four)"
    )
    evaluate.add_argument("--splits", type=int, default=None, help="UCI splits to run (default: all 20)")
    evaluate.add_argument("--samples", type=int, default=10_000, help="UCI test samples T (default 10000)")
    evaluate.add_argument(
        "--epoch-factor",
        type=float,
        default=10.0,
        help="UCI epochs = n_epochs x this (protocol: 10; smaller only for smoke tests)",
    )
    evaluate.add_argument("--uci-root", type=Path, default=Path("../shared/datasets/uci"), metavar="DIR")
    evaluate.add_argument("--workdir", type=Path, default=None, help="keep models here (default: a temp dir)")
    evaluate.add_argument("--json", type=Path, default=None, metavar="FILE")
    evaluate.add_argument("--figures", type=Path, default=None, metavar="DIR")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(handler=run_evaluate)

    demo = subcommands.add_parser(
        "demo", help="run the main job end to end on the bundled digits data", description="Train on digits."
    )
    demo.add_argument("--workdir", default=DEFAULT_DEMO_DIR, help="where to write everything (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=run_demo)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Training flags; every flag defaults to 'not given' so the TOML file can fill it."""
    s = argparse.SUPPRESS
    add = parser.add_argument
    add("--config", default=None, metavar="FILE", help="TOML file with training settings ([train] table or top level)")
    add("--out", default=s, metavar="DIR", help="output directory for model.keras and training.json")
    add("--dataset", default=s, help="digits (default), diabetes, csv:PATH or npz:PATH")
    add("--target", default=s, type=_names, metavar="COL[,COL]", help="target column(s) of a CSV file")
    add("--task", default=s, help="classification, regression or auto (default)")
    add("--architecture", "--arch", dest="architecture", default=s, help="mlp (default) or cnn")
    add("--hidden", default=s, type=_ints, metavar="N,N", help="hidden dense units (default 256,256)")
    add("--dropout", default=s, type=_floats, metavar="R,R", help="dropout after each hidden layer (default 0.2,0.5)")
    add("--input-dropout", default=s, type=float, metavar="R", help="dropout rate on the inputs (default 0)")
    add("--conv-filters", default=s, type=_ints, metavar="N,N", help="CNN filters per block (default 16,32)")
    add("--conv-dropout", default=s, type=_floats, metavar="R,R", help="dropout after each conv block (default 0.1)")
    add("--conv-dropout-type", default=s, help="spatial (whole channels, default) or standard")
    add("--kernel-size", default=s, type=int, help="CNN kernel size (default 3)")
    add("--image-shape", default=s, type=_ints, metavar="H,W[,C]", help="reshape flat rows into images for the CNN")
    add("--max-norm", default=s, type=float, metavar="C", help="max-norm constraint on incoming weights")
    add("--l2", default=s, type=float, help="L2 weight decay (default 0)")
    add("--epochs", default=s, type=int, help="training epochs (default 40)")
    add("--batch-size", default=s, type=int, help="batch size (default 64)")
    add("--learning-rate", default=s, type=float, help="Adam learning rate (default 1e-3)")
    add("--val-fraction", default=s, type=float, help="validation fraction (default 0.2)")
    add("--seed", default=s, type=int, help="random seed; the same seed gives identical weights (default 0)")
    add("--patience", default=s, type=int, help="early-stopping patience in epochs (default: off)")
    add("--quiet", default=s, action="store_true", help="no progress bar")
    add("--json", action="store_true", help="print the training record as JSON instead of a table")


def run_train(args: argparse.Namespace) -> int:
    from pipeline.config import FIELD_NAMES, load_config
    from serving.cli import require_extra

    require_extra("train", "tensorflow", "keras", "sklearn")
    overrides = {name: value for name, value in vars(args).items() if name in FIELD_NAMES}
    config = load_config(args.config, overrides)
    if args.json:
        config.quiet = True
    record = _train(config)
    if args.json:
        json.dump(record, sys.stdout, indent=2)
        print()
    else:
        print_training_summary(record)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from serving.cli import require_extra

    require_extra("train", "tensorflow", "keras", "sklearn", "matplotlib")
    if args.duration <= 0 or args.repeats < 1:
        raise InvalidArgument(f"Expected --duration > 0 and --repeats >= 1. Received: {args.duration}, {args.repeats}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline.bench.run import run_bench as bench

    report = bench(args.json, args.plot, duration=args.duration, repeats=args.repeats, quiet=args.quiet)
    print_bench(report)
    return 0


def print_bench(report: dict[str, Any]) -> None:
    from rich.table import Table

    from serving.console import stdout_console

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
    console.print(
        f"server: peak RSS {process['peak_rss_mb']:.1f} MB, ready in {process['ready_seconds']} s; "
        f"whole run {report['seconds']} s"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from pipeline.evaluation.report import print_digits, print_uci
    from pipeline.progress import progress_bar
    from serving.cli import require_extra

    require_extra("train", "tensorflow", "keras", "sklearn", "matplotlib")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="mcdrop-evaluate-") as tmp, progress_bar() as bar:
        if args.quiet:
            bar.stop()
        workdir = args.workdir or Path(tmp)
        if args.suite == "digits":
            from pipeline.evaluation.digits import run_digits

            task = bar.add_task("evaluate digits", total=5, status="")

            def step(text: str) -> None:
                bar.update(task, status=text, advance=1)

            results: dict[str, Any] = run_digits(workdir, seed=args.seed, step=step)
            bar.update(task, completed=5, status="done")
            if args.figures is not None:
                from pipeline.evaluation.figures import digits_figures

                results["figures"] = [str(p) for p in digits_figures(results, args.figures)]
        else:
            from pipeline.evaluation.uci import PUBLISHED, run_uci

            names = args.dataset or list(PUBLISHED)
            total = len(names) * (args.splits or 20)
            task = bar.add_task("evaluate uci", total=total, status="")
            results = {"datasets": []}
            for name in names:
                results["datasets"].append(
                    run_uci(
                        args.uci_root,
                        name,
                        workdir,
                        splits=args.splits,
                        samples=args.samples,
                        epoch_factor=args.epoch_factor,
                        seed=args.seed,
                        step=lambda text: bar.update(task, status=text, advance=1),
                    )
                )
            bar.update(task, status="done")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (print_digits if args.suite == "digits" else print_uci)(results)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The main job end to end on the bundled digits data: train → export → serve → query → stop."""
    from pipeline.config import TrainConfig
    from serving.cli import require_extra

    require_extra("train", "tensorflow", "keras", "sklearn")
    workdir = Path(args.workdir)
    repository = workdir / "repository"
    config = TrainConfig(out=str(workdir / "digits-mlp"), dataset="digits", seed=1, quiet=args.quiet).validate()
    print(f"[1/4] training a dropout MLP on the bundled digits data → {config.out}")
    record = _train(config)
    print_training_summary(record)
    print(f"[2/4] exporting deterministic and Monte-Carlo LiteRT graphs → {repository}")
    version, manifest = export_model(Path(config.out) / "model.keras", repository, "digits", quiet=args.quiet)
    print_export_summary(repository, version, manifest)
    print("[3/4] starting the gRPC server (mcdrop serve) on a free loopback port")
    from pipeline.demo import query_demo_server

    print("[4/4] querying it with an in-distribution digit and an out-of-distribution input")
    return query_demo_server(repository, workdir / "server.log", record)


def run_export(args: argparse.Namespace) -> int:
    from serving.cli import require_extra

    require_extra("train", "tensorflow", "keras")
    version, manifest = export_model(
        Path(args.model),
        Path(args.repository),
        args.name,
        samples=args.samples,
        quantize=tuple(args.quantize),
        task=args.task,
        labels=args.labels,
        seed=args.seed,
        quiet=args.quiet or args.json,
    )
    if args.json:
        json.dump({"version": version, **manifest}, sys.stdout, indent=2)
        print()
    else:
        print_export_summary(Path(args.repository), version, manifest)
    return 0


def run_export_batch(args: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.batch import load_job, run_entry
    from pipeline.progress import progress_bar
    from serving.cli import require_extra

    require_extra("train", "tensorflow", "keras", "sklearn")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    job = load_job(Path(args.job))
    results = []
    quiet = args.quiet or args.json
    with progress_bar() as bar:
        if quiet:
            bar.stop()
        task = bar.add_task("export-batch", total=len(job.entries), status="")
        for entry in job.entries:
            bar.update(task, status=entry["name"])
            results.append(run_entry(job, entry))
            bar.advance(task)
        bar.update(task, status="done")
    failed = [r for r in results if r.status == "failed"]
    if args.json:
        json.dump([dataclasses.asdict(r) for r in results], sys.stdout, indent=2)
        print()
    else:
        _print_batch_summary(results, job.repository)
    return 1 if failed else 0


def _print_batch_summary(results: list[Any], repository: Path) -> None:
    from rich.table import Table

    from pipeline.progress import stdout_console

    table = Table(title=f"export-batch → {repository}")
    for column in ("entry", "status", "version", "selected", "validation", "seconds", "detail"):
        table.add_column(column, justify="right" if column in ("version", "seconds") else "left")
    style = {"exported": "green", "skipped": "cyan", "failed": "red"}
    for r in results:
        selected = ", ".join(f"{k}={v}" for k, v in (r.selected or {}).items())
        version = "" if r.version is None else str(r.version)
        table.add_row(
            r.name, f"[{style[r.status]}]{r.status}[/]", version, selected, r.val_metric, f"{r.seconds:.1f}", r.detail
        )
    console = stdout_console()
    console.print(table)
    counts = {status: sum(r.status == status for r in results) for status in style}
    console.print(", ".join(f"{n} {status}" for status, n in counts.items()))


def export_model(
    model: Path, repository: Path, name: str, *, quiet: bool = False, **options: Any
) -> tuple[int, dict[str, Any]]:
    """Run one export with a progress display; return ``(version, manifest)``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline.export.exporter import ExportOptions, export
    from pipeline.progress import stderr

    export_options = ExportOptions(model_path=model, repository=repository, name=name, **options)
    if quiet:
        return export(export_options)
    with stderr.status("exporting") as status:
        return export(export_options, step=lambda text: status.update(f"exporting: {text}"))


def print_export_summary(repository: Path, version: int, manifest: dict[str, Any]) -> None:
    from rich.table import Table

    from pipeline.progress import stdout_console

    console = stdout_console()
    table = Table(title=f"{manifest['name']} version {version} · {manifest['task']}")
    for column in ("file", "bytes", "ops", "random ops"):
        table.add_column(column, justify="right" if column != "file" else "left")
    for file, size in manifest["file_bytes"].items():
        graphs = [*manifest["graphs"].values()]
        graphs += [g for variant in manifest["quantized"].values() for g in variant["graphs"].values()]
        graph = next((g for g in graphs if g["file"] == file), None)
        ops = graph["ops"] if graph else []
        random = sorted({op for op in ops if op.startswith("RANDOM")})
        table.add_row(file, f"{size:,}", str(len(ops)) if graph else "", ", ".join(random))
    console.print(table)
    if not manifest["stochastic"]:
        console.print("[yellow]The model has no dropout layer: exported the deterministic graph only.[/]")
    else:
        layers = ", ".join(f"{d['name']} ({d['class']}, {d['rate']:g})" for d in manifest["dropout_layers"])
        console.print(f"dropout layers: {layers}")
    for check in manifest["verification"]["checks"]:
        detail = {k: v for k, v in check.items() if k in ("max_abs_diff", "max_z", "rows_before_tile")}
        console.print(
            f"  [green]✓[/] {check['check']}{' ' + check.get('graph', '') if 'graph' in check else ''} {detail or ''}"
        )
    timing = ", ".join(f"{k}={v}" for k, v in manifest["timing_ms"].items())
    console.print(f"timing (ms): {timing}")
    console.print(f"published: {repository / manifest['name'] / str(version)}")


def _train(config: Any) -> dict[str, Any]:
    # TensorFlow's C++ start-up chatter is noise for a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline.training import train

    return train(config)


def print_training_summary(record: dict[str, Any]) -> None:
    from rich.table import Table

    from pipeline.progress import stdout_console

    final, gap = record["final_metrics"], record["train_val_gap"]
    table = Table(title=f"{record['dataset']['name']} · {record['task']} · {record['epochs_run']} epochs")
    table.add_column("metric")
    table.add_column("train", justify="right")
    table.add_column("validation", justify="right")
    table.add_column("gap", justify="right")
    for metric in final["train"]:
        table.add_row(metric, f"{final['train'][metric]:.4f}", f"{final['val'][metric]:.4f}", f"{gap[metric]:+.4f}")
    console = stdout_console()
    console.print(table)
    layers = ", ".join(f"{d['name']}={d['rate']:g}" for d in record["dropout_layers"]) or "none"
    console.print(f"dropout layers: {layers}")
    console.print(f"saved: {Path(record['config']['out']) / 'model.keras'} and training.json")


def _ints(text: str) -> list[int]:
    try:
        return parse_int_list(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats(text: str) -> list[float]:
    try:
        return parse_float_list(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
