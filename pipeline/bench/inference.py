"""In-process rows: the same model and inputs through Keras, LiteRT and mcdrop, one thread each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.bench.reference import Reference, flops
from mcdrop.serving.common.timing import call_times_ms, percentile

WARMUP = 3


def timed(fn: Callable[[], object], repeats: int, warmup: int = WARMUP) -> dict[str, float]:
    """Median and p99 wall time in ms over ``repeats`` calls after a warm-up."""
    times = call_times_ms(fn, repeats, warmup)
    return {"median_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


def inference_rows(
    reference: Reference, repository: Path, batch: int, samples: int, gflops: float, repeats: int
) -> list[dict[str, Any]]:
    import tensorflow as tf

    from mcdrop.serving.core import PredictionRequest
    from mcdrop.serving.models.litert import Graph
    from mcdrop.serving.models.repository import ModelRepository
    from mcdrop.serving.server.server import data_plane
    from mcdrop.serving.server.settings import ServerSettings

    model, x = reference.model, reference.inputs(batch)
    version_dir = repository / reference.name / "1"
    base = {"model": reference.name, "batch": batch, "samples": samples}
    rows: list[dict[str, Any]] = []

    def row(name: str, timing: dict[str, float], **extra: Any) -> None:
        rows.append({"name": name, **base, **timing, **extra})

    x_tf = tf.constant(x)
    if reference.all_rows:
        row(
            "keras_eager_loop",
            timed(lambda: [model(x_tf, training=True) for _ in range(samples)], max(3, repeats // 10)),
            note="T calls of model(x, training=True), eager",
        )
    repeated = tf.constant(np.tile(x, (samples,) + (1,) * (x.ndim - 1)))
    batched = tf.function(lambda z: model(z, training=True))
    row(
        "keras_batched",
        timed(lambda: batched(repeated).numpy(), repeats),
        note="one tf.function call on the input repeated T times",
    )

    mc = Graph(version_dir / "mc.tflite", num_threads=1)
    one = np.array(1, np.int32)
    if reference.all_rows:
        row(
            "tflite_sequential",
            timed(lambda: [mc.run({"x": x, "samples": one}) for _ in range(samples)], repeats),
            note="T invokes of the stochastic graph with one sample each",
        )
    all_samples = np.array(samples, np.int32)
    row(
        "tflite_mc_graph_rng",
        timed(lambda: mc.run({"x": x, "samples": all_samples}), repeats),
        note="mc.tflite, all T samples in one invoke, LiteRT's in-graph RNG",
    )

    settings = ServerSettings(repository=str(repository), pool_size=1, interpreter_threads=1, max_sample_rows=10**7)
    store = ModelRepository(repository, pool_size=1, interpreter_threads=1)
    store.scan()
    plane = data_plane(store, settings.validate())
    request = PredictionRequest(model=reference.name, x=x, samples=samples)
    row(
        "mcdrop",
        timed(lambda: plane.predict(request), repeats),
        note="the server's data plane in process: validation, host masks, mc_masked invoke, uncertainty",
    )

    deterministic = Graph(version_dir / "deterministic.tflite", num_threads=1)
    row("deterministic", timed(lambda: deterministic.run({"x": x}), repeats), note="one pass, dropout off (floor)")
    needed = flops(reference.manifest, batch, samples)
    limit_ms = needed / (gflops * 1e9) * 1e3
    rows.append(
        {
            "name": "limit",
            **base,
            "median_ms": limit_ms,
            "flops": needed,
            "sgemm_gflops": gflops,
            "note": "FLOPs with prefix caching / measured one-thread sgemm rate",
        }
    )
    by_name = {r["name"]: r["median_ms"] for r in rows}
    ours = by_name["mcdrop"]
    ratios = {f"ratio_to_{name}": ours / by_name[name] for name in ("keras_batched", "tflite_sequential",
              "keras_eager_loop") if name in by_name}  # fmt: skip
    rows[[r["name"] for r in rows].index("mcdrop")].update(ratio_to_limit=ours / limit_ms, **ratios)
    return rows
