"""``mcdrop export`` (one Keras model) and ``mcdrop export-batch`` (a TOML job of many)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from mcdrop.pipeline.cli import prepare
from mcdrop.pipeline.cli.variants import print_variants
from mcdrop.serving.cli.arguments import names, positive_floats, positive_int, require_extra
from mcdrop.serving.cli.calibrate import add_calibration_arguments, calibration_options, print_calibration
from mcdrop.serving.models.manifest import Manifest


def register_export(subcommands: Any) -> None:
    export = subcommands.add_parser(
        "export",
        help="export a Keras model with dropout to verified LiteRT graphs in a model repository",
        description="Convert MODEL.keras into deterministic, mc and mc_masked LiteRT graphs, verify them "
        "numerically and publish them atomically as REPO/NAME/<next version>/.",
    )
    add = export.add_argument
    add("model", metavar="MODEL.keras", help="a Keras 3 model file (Sequential or functional)")
    add("--repository", "--repo", required=True, metavar="REPO", help="model repository directory")
    add("--name", required=True, help="model name in the repository")
    add("--samples", type=positive_int, default=100, help="default T recorded in the manifest (default %(default)s)")
    add("--quantize", type=names, default=[], metavar="KIND[,KIND]", help="also export float16 and/or dynamic-int8")
    add("--task", default=None, help="classification or regression (default: from training.json)")
    add("--labels", type=names, default=None, metavar="A,B,..", help="class labels")
    add("--seed", type=int, default=0, help="seed of the verification inputs and masks")
    add(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or .py file first, so the model's registered custom layers load (repeatable)",
    )
    add(
        "--noise-precision",
        type=positive_floats,
        default=(),
        metavar="TAU[,TAU]",
        help="regression: observation-noise precision tau (1/variance, in the target's units) per output, or one "
        "for all; served intervals then cover y, not only the mean (default: the training record's estimate, "
        "else epistemic only)",
    )
    add(
        "--mc-layers",
        default="all",
        metavar="all|last|NAME[,NAME]",
        help="which dropout layers stay stochastic in the Monte-Carlo graphs: all (default), last (those nearest the "
        "output, which feed no other dropout: the rest of the model runs once per input) or layer/mask names as in "
        "the export's mask table; the others run as in inference",
    )
    add(
        "--device-shape",
        dest="device_shapes",
        action="append",
        type=device_shape,
        default=[],
        metavar="B=ROWS,T=SAMPLES",
        help="also export static-shape graphs for devices (LiteRT.js, phone GPU/NPU delegates): deterministic, mc, "
        "mc_masked and mc_summary with B rows and T samples fixed, verified like the others (repeatable)",
    )
    add(
        "--no-moments",
        dest="moments",
        action="store_false",
        help="skip the one-pass moments graph (mode moments; made by default where every layer after the first "
        "dropout has a propagation rule and it passes its check against Monte Carlo)",
    )
    add(
        "--verify-data",
        type=Path,
        default=None,
        metavar="FILE",
        help="rows of the model's inputs (.npz, CSV or Parquet, no labels needed) to verify and fingerprint the "
        "graphs on and to calibrate --quantize int8 (default: the --calibration-data rows, else drawn rows)",
    )
    add_calibration_arguments(export, flag="--calibration-data")
    add("--quiet", action="store_true", help="no progress display")
    add("--json", action="store_true", help="print the manifest as JSON")
    export.set_defaults(handler=run_export)


def device_shape(text: str) -> Any:
    """``B=1,T=32`` for argparse: a bad value is a usage error (exit 2) that says what was expected."""
    from mcdrop.pipeline.export.convert.shapes import parse_shape
    from mcdrop.serving.errors import InvalidArgument

    try:
        return parse_shape(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register_export_batch(subcommands: Any) -> None:
    batch = subcommands.add_parser(
        "export-batch",
        help="train and export many models from a TOML job (resumable)",
        description="Run every [[entry]] of JOB.toml: train (optionally choosing settings by k-fold "
        "cross-validation) and export. Finished entries are skipped on a rerun; a failing entry does not "
        "stop the job; the exit code is 1 if any entry failed.",
    )
    batch.add_argument("job", metavar="JOB.toml")
    batch.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run each entry as a Ray task: a local Ray without ADDRESS, else the cluster at ADDRESS",
    )
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.add_argument("--json", action="store_true", help="print the results as JSON")
    batch.set_defaults(handler=run_export_batch)


def run_export(args: argparse.Namespace) -> int:
    prepare(args, "tensorflow", "keras")
    from mcdrop.pipeline.export.exporter import ExportOptions

    options = ExportOptions(
        model_path=Path(args.model),
        repository=Path(args.repository),
        name=args.name,
        samples=args.samples,
        quantize=tuple(args.quantize),
        task=args.task,
        labels=args.labels,
        seed=args.seed,
        imports=tuple(args.imports),
        noise_precision=tuple(args.noise_precision),
        mc_layers=args.mc_layers,
        device_shapes=tuple(args.device_shapes),
        moments=args.moments,
        calibration=calibration_options(args),
        verify_data=args.verify_data,
    )
    version, manifest = export_with_status(options, quiet=args.quiet or args.json)
    if args.json:
        json.dump({"version": version, **manifest.to_json()}, sys.stdout, indent=2)
        print()
    else:
        print_export_summary(options.repository, version, manifest)
        if manifest.calibration is not None:
            print_calibration(manifest.calibration)
    return 0


def export_with_status(options: Any, *, quiet: bool) -> tuple[int, Manifest]:
    """Run one export, showing its current step on stderr unless ``quiet``."""
    from mcdrop.pipeline.export.exporter import export
    from mcdrop.serving.common.console import stderr

    if quiet:
        return export(options)
    with stderr.status("exporting") as status:
        return export(options, step=lambda text: status.update(f"exporting: {text}"))


def run_export_batch(args: argparse.Namespace) -> int:
    prepare(args)
    from mcdrop.pipeline.jobs.batch import load_job, run_entry
    from mcdrop.serving.common.console import progress_bar

    job = load_job(Path(args.job))
    results = []
    quiet = args.quiet or args.json
    with progress_bar() as bar:
        if quiet:
            bar.stop()
        task = bar.add_task("export-batch", total=len(job.entries), status="")
        if args.ray is not None:
            require_extra("ray", "ray")
            from mcdrop.pipeline.jobs.on_ray import run_entries_on_ray

            bar.update(task, status="on Ray")
            results = run_entries_on_ray(job, args.ray, job.cpus_per_entry, lambda _: bar.advance(task))
        else:
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
        print_batch_summary(results, job.repository)
    return 1 if failed else 0


def print_batch_summary(results: list[Any], repository: Path) -> None:
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

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


def print_inputs_and_outputs(manifest: Manifest) -> None:
    """The graphs' named inputs and outputs (a model with several of either)."""
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

    table = Table(title="inputs and outputs (graph tensor names)")
    for column in ("", "name", "shape", "dtype / task", "detail"):
        table.add_column(column)
    for spec in manifest.inputs:
        detail = f"token ids {spec.integer_range[0]}..{spec.integer_range[1]}" if spec.integer_range else ""
        if spec.feature_names:
            detail = (detail + " · " if detail else "") + f"{len(spec.feature_names)} training columns"
        table.add_row("input", spec.name, "×".join(map(str, spec.shape)), spec.dtype, detail)
    for output in manifest.outputs:
        labels = output.labels or list(output.target_names or [])
        table.add_row("output", output.name, "×".join(map(str, output.shape)), str(output.task),
                      ", ".join(map(str, labels[:6])) + (" …" if len(labels) > 6 else ""))  # fmt: skip
    stdout_console().print(table)


def print_moments(manifest: Manifest) -> None:
    """One line on the moments graph: how close it came to Monte Carlo, or why there is none."""
    from mcdrop.serving.common.console import stdout_console

    moments = manifest.moments
    if moments is None:
        return
    console = stdout_console()
    if not moments.available:
        console.print(f"[yellow]mode moments: unavailable — {moments.reason}[/] (Monte Carlo is unaffected)")
        return
    figures = []
    for name, output in moments.check.get("outputs", {}).items():
        named = "" if manifest.single else f"{name}: "
        ratio = output.get("std_ratio_median")
        figures.append(f"{named}mean within {output['mean_z']:.1f} SE / {output['mean_in_std']:.2f} std of MC"
                       + ("" if ratio is None else f", std {ratio:.2f}× MC's (median)"))  # fmt: skip
    samples = moments.check.get("mc_samples")
    console.print(f"  [green]✓[/] moments (one pass) vs Monte Carlo T={samples}: " + "; ".join(figures))


def print_verification_inputs(manifest: Manifest, console: Any) -> None:
    """Which rows the checks ran on: a data file's, or drawn ones (then the checks say little about real inputs)."""
    found = manifest.verification.get("inputs")
    if not isinstance(found, dict):
        return
    if found.get("source") == "drawn":
        console.print(f"verified on {found.get('verification_rows')} drawn rows ({found.get('distribution')}); "
                      "give --verify-data FILE to verify on the model's real inputs")  # fmt: skip
        return
    digest = str(found.get("sha256"))[:12]
    console.print(f"verified on {found.get('verification_rows')} of the {found.get('rows')} rows of "
                  f"{found.get('file')} (--{found.get('source')}, sha256 {digest}…)")  # fmt: skip


def print_export_summary(repository: Path, version: int, manifest: Manifest) -> None:
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

    console = stdout_console()
    table = Table(title=f"{manifest.name} version {version} · {manifest.task}")
    for column in ("file", "bytes", "ops", "random ops"):
        table.add_column(column, justify="right" if column != "file" else "left")
    ops_by_file = {spec.file: list(spec.ops) for spec in manifest.graphs.values()}
    ops_by_file |= {graph.file: list(graph.ops) for graph in manifest.device_graphs}
    if manifest.moments is not None and manifest.moments.graph is not None:
        ops_by_file[manifest.moments.graph.file] = list(manifest.moments.graph.ops)
    for variant in manifest.variants.values():
        ops_by_file |= {spec.file: list(spec.ops) for spec in variant.graphs.values()}
        ops_by_file |= {graph.file: list(graph.ops) for graph in variant.device_graphs}
    for file, size in manifest.file_bytes.items():
        graph = file in ops_by_file
        ops = ops_by_file.get(file, [])
        random = sorted({op for op in ops if op.startswith("RANDOM")})
        table.add_row(file, f"{size:,}", str(len(ops)) if graph else "", ", ".join(random))
    console.print(table)
    if not manifest.stochastic:
        console.print(
            "[yellow]The model draws no dropout mask in training mode: exported the deterministic graph only.[/]"
        )
    else:
        masks = Table(title="dropout masks (one per sequence for RNNs; fed to mc_masked.tflite as [T, B, *shape])")
        for column in ("site", "mask input", "layer", "kind", "rate", "shape", "sampled"):
            masks.add_column(column, justify="right" if column in ("rate", "shape") else "left")
        unsampled = manifest.unsampled_dropout_layers
        for d, sampled in [*((d, True) for d in manifest.dropout_layers), *((d, False) for d in unsampled)]:
            shape = "×".join(map(str, d.noise_shape))
            layer = f"{d.layer or d.name} ({d.layer_class})"
            mask_input = d.feed_name if sampled else ""
            shown = "[green]yes[/]" if sampled else "[dim]no (inference)[/]"
            masks.add_row(d.name, mask_input, layer, d.mask_kind or "plain", f"{d.rate:g}", shape, shown)
        console.print(masks)
        sampled_count = len(manifest.dropout_layers)
        console.print(
            f"--mc-layers {manifest.mc_layers}: the uncertainty comes from "
            f"{sampled_count} of {sampled_count + len(unsampled)} dropout sites"
        )
    print_verification_inputs(manifest, console)
    for check in manifest.verification["checks"]:
        detail = {k: v for k, v in check.items() if k in ("max_abs_diff", "max_z", "rows_before_samples")}
        console.print(
            f"  [green]✓[/] {check['check']}{' ' + check.get('graph', '') if 'graph' in check else ''} {detail or ''}"
        )
    print_moments(manifest)
    print_variants(manifest, console)
    timing = ", ".join(f"{k}={v}" for k, v in manifest.timing_ms.items())
    if not manifest.single:
        print_inputs_and_outputs(manifest)
    for output in manifest.outputs:
        noise = output.observation_noise
        if noise is not None:
            precision = noise.precision
            shown = "none (epistemic only)" if precision is None else ", ".join(f"{p:.4g}" for p in precision)
            named = "" if manifest.single else f" ({output.name})"
            console.print(f"observation noise tau{named}: {shown} — {noise.method}")
    console.print(f"timing (ms): {timing}")
    per_sample_row = manifest.activation_bytes_per_sample_row()
    if per_sample_row is not None:
        per_row = per_sample_row / 2**20
        console.print(f"activation memory: {per_row:.2f} MiB per sample row (T x B rows per invoke)")
    if manifest.export is not None:
        console.print(f"export: {manifest.export['wall_s']:.1f} s, peak RSS {manifest.export['peak_rss_mb']:,.0f} MB")
    console.print(f"published: {repository / manifest.name / str(version)}")
