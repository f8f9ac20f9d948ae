"""The benchmark as a picture: in-process rows per model and batch, server rows per concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INFERENCE_ROWS = (
    "keras_eager_loop",
    "keras_batched",
    "tflite_sequential",
    "tflite_mc_graph_rng",
    "mcdrop",
    "deterministic",
    "limit",
)
COLOURS = {
    "keras_eager_loop": "#bbbbbb",
    "keras_batched": "#888888",
    "tflite_sequential": "#d9a441",
    "tflite_mc_graph_rng": "#e7c27d",
    "mcdrop": "#2a7ab9",
    "deterministic": "#7fb77e",
    "limit": "#333333",
}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    groups = list(dict.fromkeys((r["model"], r["batch"]) for r in rows if r["name"] in INFERENCE_ROWS))  # run order
    fig, (left, right) = plt.subplots(1, 2, figsize=(19, 6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(INFERENCE_ROWS)
    for i, name in enumerate(INFERENCE_ROWS):
        values = [
            next((r["median_ms"] for r in rows if r["name"] == name and (r["model"], r["batch"]) == g), 0)
            for g in groups
        ]
        positions = [j + (i - len(INFERENCE_ROWS) / 2 + 0.5) * width for j in range(len(groups))]
        bars = left.bar(positions, values, width, label=name, color=COLOURS[name])
        if name == "mcdrop":
            for bar, value in zip(bars, values, strict=True):
                left.annotate(
                    f"{value:.2f}",
                    (bar.get_x() + bar.get_width() / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color=COLOURS[name],
                    fontweight="bold",
                )
    left.set_yscale("log")
    left.set_xticks(range(len(groups)), [f"{m}\nbatch {b}" for m, b in groups])
    bottom, top = left.get_ylim()
    left.set_ylim(bottom, top * 30)  # room for the legend above the tallest bars
    left.set_ylabel(f"median ms per estimate (T={report['settings']['samples']}, 1 thread, log scale)")
    left.set_title("Monte-Carlo dropout inference, in process")
    left.legend(fontsize=8, loc="upper left", ncol=4)
    left.grid(axis="y", which="both", alpha=0.3)

    served = [r for r in rows if "concurrency" in r]
    labels = [f"{r['name'].replace('server_', '')}\nc={r['concurrency']}" + (f" w={r['workers']}" if "workers" in r
              else "") for r in served]  # fmt: skip
    p50 = [r["median_ms"] for r in served]
    p99 = [r["p99_ms"] for r in served]
    x = range(len(served))
    right.bar([i - 0.2 for i in x], p50, 0.4, label="p50", color="#2a7ab9")
    right.bar([i + 0.2 for i in x], p99, 0.4, label="p99", color="#9cc3e4")
    for i, r in enumerate(served):
        right.annotate(f"{r['throughput_rps']:.0f}/s", (i, max(p50[i], p99[i])), ha="center", va="bottom", fontsize=8)
    right.set_xticks(list(x), labels, fontsize=8)
    right.set_ylabel("latency ms (MLP, batch 1); label: throughput")
    process = report["process"]
    right.set_title(
        f"gRPC server (separate client processes)\npeak RSS {process['peak_rss_mb']:.0f} MB, "
        f"ready in {process['ready_seconds_median']:.2f} s"
    )
    right.legend(fontsize=8)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
