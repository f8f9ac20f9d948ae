"""Run every benchmark row in one process tree, check the targets, write JSON and a PNG."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from mcdrop.pipeline.bench.perf_analyzer import PerfAnalyzer
from mcdrop.pipeline.bench.reference import SAMPLES, export_references, sgemm_gflops
from mcdrop.serving.common.console import progress_bar

BATCHES = (1, 32)
CONCURRENCY = (1, 8)


def run_bench(
    json_path: Path | None,
    plot_path: Path | None,
    *,
    duration: float = 3.0,
    repeats: int = 50,
    quiet: bool = False,
    perf_analyzer: PerfAnalyzer | None = None,
    protocols_only: bool = False,
) -> dict[str, Any]:
    """All rows on this machine; returns the report that is also written to ``json_path``.

    ``perf_analyzer``: add its rows beside the own load generator's. ``protocols_only``: only the rows of the same
    request over every API (and perf_analyzer's), on the MLP.
    """
    if protocols_only:
        return _protocols_bench(json_path, duration=duration, quiet=quiet, perf_analyzer=perf_analyzer)
    import tensorflow as tf

    # One thread everywhere, so every row measures the same compute: Keras, LiteRT and sgemm alike.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from mcdrop.pipeline.bench.inference import inference_rows
    from mcdrop.pipeline.bench.server import SERVER_SETTINGS, server_rows

    started = time.monotonic()
    steps = [
        "export reference models",
        "sgemm rate",
        *[f"{m} batch {b}" for m in ("mlp", "cnn", "lstm", "transformer") for b in BATCHES],
        "server rows",
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcdrop-bench-") as tmp, progress_bar() as bar:
        if quiet:
            bar.stop()
        task = bar.add_task("bench", total=len(steps), status="")
        repository = Path(tmp) / "repository"
        bar.update(task, status=steps[0])
        references = export_references(repository)
        bar.advance(task)
        bar.update(task, status=steps[1])
        gflops = sgemm_gflops()
        bar.advance(task)
        for reference in references:
            for batch in BATCHES:
                bar.update(task, status=f"{reference.name} batch {batch}")
                rows += inference_rows(reference, repository, batch, SAMPLES, gflops, repeats)
                bar.advance(task)
        bar.update(task, status=steps[-1])
        mlp = references[0]
        served, process = server_rows(repository, mlp.name, mlp.inputs(1), SAMPLES, duration, CONCURRENCY,
                                      perf_analyzer)  # fmt: skip
        rows += served
        bar.advance(task)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {
            "samples": SAMPLES,
            "threads_per_row": 1,
            "server": SERVER_SETTINGS,
            "load_seconds": duration,
            "repeats": repeats,
        },
        "models": {r.name: r.description for r in references},
        "rows": rows,
        "process": process,
        "targets": targets(rows, process),
        "seconds": round(time.monotonic() - started, 1),
    }
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if plot_path is not None:
        from mcdrop.pipeline.bench.plot import plot

        plot(report, plot_path)
    return report


def targets(rows: list[dict[str, Any]], process: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets (M2.7), each with the measured value and whether it was met."""

    def ours(model: str, batch: int) -> dict[str, Any]:
        return next(r for r in rows if r["name"] == "mcdrop" and r["model"] == model and r["batch"] == batch)

    def served(clients: int, workers: int, name: str = f"server_mc_T{SAMPLES}") -> dict[str, Any]:
        return next(r for r in rows if r["name"] == name and r["concurrency"] == clients
                    and r.get("workers", 1) == workers)  # fmt: skip

    checks: list[tuple[str, float, str, float]] = []
    for model, name, keras_bound in (("mlp", "MLP", 0.25), ("cnn", "CNN", 0.55)):
        for batch in BATCHES:
            checks.append((f"mcdrop / limit ({name}, B={batch})", ours(model, batch)["ratio_to_limit"], "at_most", 1.5))
        for batch in BATCHES:
            value = ours(model, batch)["ratio_to_keras_batched"]
            checks.append((f"mcdrop / keras_batched ({name}, B={batch})", value, "at_most", keras_bound))
    sequential = ours("mlp", 1)["ratio_to_tflite_sequential"]
    checks.append(("mcdrop / tflite_sequential (MLP, B=1)", sequential, "at_most", 0.2))
    workers = sorted({r["workers"] for r in rows if r["name"] == f"server_mc_T{SAMPLES}"})
    single = min((served(1, w) for w in workers), key=lambda r: r["median_ms"])
    best = min((served(max(CONCURRENCY), w) for w in workers), key=lambda r: r["median_ms"])
    checks += [
        (f"server MC p50 / echo floor p50 (concurrency 1, best: {single['workers']} worker(s))",
         single["ratio_to_echo_floor"], "at_most", 1.5),
        (f"server MC p50 / echo floor p50 (concurrency {max(CONCURRENCY)}, best: {best['workers']} workers)",
         best["ratio_to_echo_floor"], "at_most", 2.5),
        (f"server MC throughput, {best['workers']} workers / 1 worker (concurrency {max(CONCURRENCY)})",
         best["throughput_rps"] / served(max(CONCURRENCY), 1)["throughput_rps"], "at_least", 1.3),
    ]  # fmt: skip
    # REST beside gRPC (M3.6), JSON bodies (the slower encoding), at every worker count: same server, same run.
    many = max(CONCURRENCY)
    for w in workers:
        rest, grpc = (f"rest_mc_T{SAMPLES}", f"server_mc_T{SAMPLES}")
        checks += [
            (f"REST JSON MC throughput / gRPC's (concurrency {many}, {w} worker(s))",
             served(many, w, rest)["throughput_rps"] / served(many, w, grpc)["throughput_rps"], "at_least", 0.8),
            (f"REST JSON MC p50 / gRPC's (concurrency 1, {w} worker(s))",
             served(1, w, rest)["median_ms"] / served(1, w, grpc)["median_ms"], "at_most", 1.2),
        ]  # fmt: skip
    on = next(r for r in rows if r["name"] == "decision_on")
    checks.append((f"calibrated / uncalibrated MC p50 (the decision's cost; MLP B=1, T={SAMPLES}, median of "
                   f"{len(on['round_ratios'])} paired rounds)", on["paired_ratio"], "at_most", 1.02))  # fmt: skip
    for scrape in (r for r in rows if r["name"] == "metrics_scrape"):
        checks.append((f"/metrics scrape with {scrape['versions']} calibrated versions loaded, {scrape['workers']} "
                       "worker(s) (ms, median)", scrape["median_ms"], "at_most", 50.0))  # fmt: skip
    checks += protocol_checks(rows)
    checks += [
        ("server peak RSS per worker, one model loaded (MB)", process["peak_rss_mb_per_worker"], "at_most", 150.0),
        ("server start to ready (s, median of 3, slowest worker count)", process["ready_seconds_median"], "at_most",
         2.0),
    ]  # fmt: skip
    return checked(checks)


Check = tuple[str, float, str, Any]
"""``(target, value, kind, bound)``: kind ``at_most`` or ``at_least`` a number, or ``within`` a ``(low, high)``."""


def checked(checks: list[Check]) -> list[dict[str, Any]]:
    found = []
    for name, value, kind, bound in checks:
        low, high = bound if kind == "within" else (bound, None) if kind == "at_least" else (None, bound)
        row: dict[str, Any] = {"target": name, "value": value}
        row |= {"at_least": low} if low is not None else {}
        row |= {"at_most": high} if high is not None else {}
        row["met"] = (low is None or value >= low) and (high is None or value <= high)
        found.append(row)
    return found


def protocol_checks(rows: list[dict[str, Any]]) -> list[Check]:
    """M4.5: TensorFlow Serving's API as fast as the OIP for the same request, and perf_analyzer's throughput within
    15 % of the own generator's for the same request."""
    checks: list[Check] = []
    for r in rows:
        if "paired_ratio_to_oip" in r:
            transport, mode = r["name"].removeprefix("tfserving_").split("_", 1)
            rounds = len(r["rounds_median_ms"])
            checks.append((f"TF Serving p50 / OIP p50 ({transport} {mode}, concurrency 1, median of {rounds} paired "
                           "rounds)", r["paired_ratio_to_oip"], "at_most", 1.1))  # fmt: skip
        if r["name"].startswith("perf_analyzer_grpc_"):
            mode = r["name"].removeprefix("perf_analyzer_grpc_")
            checks.append((f"perf_analyzer / own generator throughput (gRPC {mode}, concurrency {r['concurrency']})",
                           r["ratio_to_own"], "within", (0.85, 1.15)))  # fmt: skip
    return checks


def _protocols_bench(
    json_path: Path | None, *, duration: float, quiet: bool, perf_analyzer: PerfAnalyzer | None
) -> dict[str, Any]:
    """``mcdrop bench --protocols``: the MLP's same request over every API, and perf_analyzer beside the own
    generator."""
    import shutil

    from mcdrop.pipeline.bench.pool import LoadPool
    from mcdrop.pipeline.bench.protocols import protocol_rows
    from mcdrop.pipeline.bench.server import SERVER_SETTINGS, server_flags

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mcdrop-bench-") as tmp, progress_bar() as bar:
        if quiet:
            bar.stop()
        task = bar.add_task("bench --protocols", total=2, status="export the MLP")
        repository = Path(tmp) / "repository"
        (mlp,) = export_references(repository, only=("mlp",))
        single = Path(tmp) / "single-model"
        shutil.copytree(repository / mlp.name, single / mlp.name)
        bar.advance(task)
        bar.update(task, status="every API" + (" and perf_analyzer" if perf_analyzer else ""))
        with LoadPool(max(CONCURRENCY)) as pool:
            rows = protocol_rows(single, mlp.name, mlp.inputs(1), SAMPLES, duration, pool,
                                 server_flags(SERVER_SETTINGS), perf_analyzer)  # fmt: skip
        bar.advance(task)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"samples": SAMPLES, "server": SERVER_SETTINGS, "load_seconds": duration},
        "models": {mlp.name: mlp.description},
        "rows": rows,
        "targets": checked(protocol_checks(rows)),
        "seconds": round(time.monotonic() - started, 1),
    }
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
