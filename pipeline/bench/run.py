"""Run every benchmark row in one process tree, check the targets, write JSON and a PNG."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from mcdrop.pipeline.bench.reference import SAMPLES, export_references, sgemm_gflops
from mcdrop.pipeline.progress import progress_bar

BATCHES = (1, 32)
CONCURRENCY = (1, 8)


def run_bench(
    json_path: Path | None, plot_path: Path | None, *, duration: float = 3.0, repeats: int = 50, quiet: bool = False
) -> dict[str, Any]:
    """All rows on this machine; returns the report that is also written to ``json_path``."""
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
        served, process = server_rows(repository, mlp.name, mlp.inputs(1), SAMPLES, duration, CONCURRENCY)
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
    """The issue's targets, each with the measured value and whether it was met."""
    ours = next(r for r in rows if r["name"] == "mcdrop" and r["model"] == "mlp" and r["batch"] == 1)
    mc = next(r for r in rows if r["name"].startswith("server_mc") and r["concurrency"] == 1)
    checks = [
        ("mcdrop / keras_batched (MLP, T=100, B=1)", ours["ratio_to_keras_batched"], 0.25),
        ("mcdrop / tflite_sequential (MLP, T=100, B=1)", ours["ratio_to_tflite_sequential"], 0.2),
        ("mcdrop / limit (MLP, T=100, B=1)", ours["ratio_to_limit"], 3.0),
        ("server MC p50 / echo floor p50 (T=100, concurrency 1)", mc["ratio_to_echo_floor"], 2.5),
        ("server peak RSS, one model loaded (MB)", process["peak_rss_mb"], 150.0),
        ("server start to ready (s, median of 3)", process["ready_seconds_median"], 2.0),
    ]
    return [{"target": name, "value": value, "at_most": bound, "met": value <= bound} for name, value, bound in checks]
