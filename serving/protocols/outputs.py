"""The outputs of a prediction, named once for every protocol, the client and batch scoring.

Each name is a field of the task's uncertainty summary (``mcdrop.serving.core.uncertainty``, which
says what each one means); ``samples`` is the raw ``[T, B, ...]`` sample outputs, returned on request.
"""

from __future__ import annotations

import numpy as np

from mcdrop.serving.core.requests import Prediction
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.models.manifest import Task

__all__ = [
    "CLASSIFICATION_OUTPUTS",
    "PER_ROW_OUTPUTS",
    "REGRESSION_OUTPUTS",
    "SAMPLES",
    "output_arrays",
    "output_names",
]

CLASSIFICATION_OUTPUTS = ("mean", "std", "predicted_class", "predictive_entropy", "expected_entropy",
                          "mutual_information", "variation_ratio")  # fmt: skip
"""``mean`` and ``std`` are per class ([B, classes]); the others one value per row ([B])."""
PER_ROW_OUTPUTS = CLASSIFICATION_OUTPUTS[2:]
REGRESSION_OUTPUTS = ("mean", "std", "predictive_std", "lower", "upper", "mean_lower", "mean_upper")
"""Each in the output's shape ([B, ...])."""
SAMPLES = "samples"


def output_names(task: Task) -> tuple[str, ...]:
    """The summary outputs of ``task``, in the order every API lists them."""
    return CLASSIFICATION_OUTPUTS if task == Task.CLASSIFICATION else REGRESSION_OUTPUTS


def output_arrays(prediction: Prediction) -> dict[str, np.ndarray]:
    """Every output of ``prediction`` by name (``samples`` only when it was asked for), with the wire dtypes:
    class indices int64, per-row classification values float64."""
    summary = prediction.summary
    arrays = {name: np.asarray(getattr(summary, name)) for name in output_names(prediction.task)}
    if isinstance(summary, ClassificationSummary):
        arrays["predicted_class"] = arrays["predicted_class"].astype(np.int64)
        arrays["variation_ratio"] = arrays["variation_ratio"].astype(np.float64)
    if prediction.sample_outputs is not None:
        arrays[SAMPLES] = prediction.sample_outputs
    return arrays
