"""Dense outputs on the client: a per-image summary of per-pixel uncertainty maps, and the maps as an ``.npz`` file.

A dense output has spatial axes after the batch: ``[B, H, W, C]`` class probabilities (segmentation), ``[B, H, W]`` or
``[B, H, W, K]`` regression. Every field the server answers keeps those axes (``mutual_information`` ``[B, H, W]``,
``std`` like ``mean``, …), so a 256 × 256 image is 65,536 rows of numbers: what a person wants first is one line per
image — how uncertain on average and at worst, how much of it is uncertain, what it was labelled as.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument

__all__ = ["DEFAULT_PIXEL_THRESHOLD", "image_summaries", "is_dense", "save_npz"]

DEFAULT_PIXEL_THRESHOLD = 0.1
"""Mutual information (nats) above which a pixel counts as uncertain in the summary, unless told otherwise: about
where digits' MC-dropout MI separates in-distribution from noise images (``docs/uncertainty-quality.md``)."""


def is_dense(prediction: Any) -> bool:
    """Does this (single-output) prediction have spatial axes: ``mean`` of rank > 2 (classification: ``[B, …, C]``
    with at least one axis between batch and classes; regression: ``[B, H, W]`` or more)?"""
    mean = getattr(prediction, "mean", None)
    return isinstance(mean, np.ndarray) and mean.ndim > 2


def image_summaries(prediction: Any, threshold: float | None = None) -> list[dict[str, Any]]:
    """One summary per image of a dense prediction.

    Classification: mean and max mutual information, the share of pixels whose MI exceeds ``threshold`` (default
    ``DEFAULT_PIXEL_THRESHOLD``), mean predictive entropy, mean p(predicted) and the predicted-class histogram (share
    of pixels per class, largest first); with per-pixel abstention, the share of pixels abstained on. Regression:
    mean prediction, mean and max std (the model's), and the share of values whose std exceeds ``threshold`` when
    one is given.
    """
    if not is_dense(prediction):
        raise InvalidArgument("Expected a dense prediction (an output with spatial axes, e.g. [B, H, W, C]).")
    p = prediction
    rows = len(p.mean)
    summaries: list[dict[str, Any]] = []
    for i in range(rows):
        if p.task == "classification":
            mi = np.asarray(p.mutual_information[i], np.float64)
            cut = DEFAULT_PIXEL_THRESHOLD if threshold is None else threshold
            predicted = np.asarray(p.predicted_class[i]).reshape(-1)
            labels = p.class_labels or [str(c) for c in range(p.mean.shape[-1])]
            counts = np.bincount(predicted, minlength=len(labels))
            order = np.argsort(-counts, kind="stable")
            confidence = np.take_along_axis(p.mean[i], np.asarray(p.predicted_class[i])[..., None], axis=-1)
            summary = {
                "row": i,
                "pixels": int(mi.size),
                "mean_mutual_information": float(mi.mean()),
                "max_mutual_information": float(mi.max()),
                "threshold": cut,
                "share_above_threshold": float(np.mean(mi > cut)),
                "mean_predictive_entropy": float(np.mean(p.predictive_entropy[i])),
                "mean_p_predicted": float(np.mean(confidence)),
                "classes": {labels[c]: float(counts[c] / predicted.size) for c in order if counts[c]},
            }
            if p.abstain is not None:
                summary["share_abstained"] = float(np.mean(p.abstain[i]))
        else:
            std = np.asarray(p.std[i], np.float64)
            summary = {
                "row": i,
                "values": int(std.size),
                "mean": float(np.mean(p.mean[i])),
                "mean_std": float(std.mean()),
                "max_std": float(std.max()),
            }
            if threshold is not None:
                summary["threshold"] = threshold
                summary["share_above_threshold"] = float(np.mean(std > threshold))
        summaries.append(summary)
    return summaries


def save_npz(prediction: Any, path: Path) -> list[str]:
    """Every array field of ``prediction`` into ``path`` (``OUTPUT/FIELD`` for a model with several outputs), written
    to a temporary file beside it and renamed, so a reader never sees half a file; returns the array names."""
    arrays: dict[str, np.ndarray] = {}
    outputs = getattr(prediction, "outputs", None) or {"": prediction}
    for name, output in outputs.items():
        for field in dataclasses.fields(output):
            value = getattr(output, field.name)
            if isinstance(value, np.ndarray):
                arrays[f"{name}/{field.name}" if name else field.name] = value
    if not arrays:
        raise InvalidArgument("The answer holds no arrays to write.")
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent or ".")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return sorted(arrays)
