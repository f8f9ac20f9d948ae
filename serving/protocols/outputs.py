"""The outputs of a prediction, named once for every protocol, the client and batch scoring.

Each name is a field of the task's uncertainty summary (``mcdrop.serving.core.uncertainty``, which
says what each one means); ``samples`` is the raw ``[T, B, ...]`` sample outputs, returned on request;
``abstain`` and ``abstain_score`` come with a classification output that abstains (``mcdrop.serving.core.decision``).

A model with several outputs names each array ``OUTPUT/FIELD`` (``cls/mean``, ``score/lower``,
``cls/samples``): the model's output name, a slash, the field; a single-output model keeps the bare
field names (``mean``, ``lower``, ``samples``) it always had.
"""

from __future__ import annotations

import numpy as np

from mcdrop.serving.core.requests import OutputPrediction, Prediction
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.models.manifest import Task

__all__ = [
    "ABSTAIN_OUTPUTS",
    "CLASSIFICATION_OUTPUTS",
    "PER_ROW_OUTPUTS",
    "REGRESSION_OUTPUTS",
    "SAMPLES",
    "field_arrays",
    "output_arrays",
    "output_names",
    "prefix",
]

CLASSIFICATION_OUTPUTS = ("mean", "std", "predicted_class", "predictive_entropy", "expected_entropy",
                          "mutual_information", "variation_ratio")  # fmt: skip
"""``mean`` and ``std`` are per class ([B, classes]); the others one value per row ([B])."""
PER_ROW_OUTPUTS = CLASSIFICATION_OUTPUTS[2:]
REGRESSION_OUTPUTS = ("mean", "std", "predictive_std", "lower", "upper", "mean_lower", "mean_upper")
"""Each in the output's shape ([B, ...])."""
SAMPLES = "samples"
ABSTAIN_OUTPUTS = ("abstain", "abstain_score")
"""Classification of a calibrated version: per row, abstain (bool) and the value of the score it abstains by."""


def output_names(task: Task) -> tuple[str, ...]:
    """The summary outputs of ``task``, in the order every API lists them."""
    return CLASSIFICATION_OUTPUTS if task == Task.CLASSIFICATION else REGRESSION_OUTPUTS


def prefix(output: str, outputs: int) -> str:
    """What a model output's array names start with: ``""`` for a model's only output, else ``"NAME/"``."""
    return f"{output}/" if outputs > 1 else ""


def output_arrays(prediction: Prediction) -> dict[str, np.ndarray]:
    """Every output of ``prediction`` by name (``samples`` only when it was asked for), with the wire dtypes:
    class indices int64, per-row classification values float64. Several model outputs: ``OUTPUT/FIELD`` names."""
    arrays: dict[str, np.ndarray] = {}
    for output in prediction.outputs:
        start = prefix(output.name, len(prediction.outputs))
        arrays.update({start + name: value for name, value in field_arrays(output).items()})
    return arrays


def field_arrays(output: OutputPrediction) -> dict[str, np.ndarray]:
    """One model output's arrays by field name (unprefixed), with the wire dtypes."""
    summary = output.summary
    arrays = {name: np.asarray(getattr(summary, name)) for name in output_names(output.task)}
    if isinstance(summary, ClassificationSummary):
        arrays["predicted_class"] = arrays["predicted_class"].astype(np.int64)
        arrays["variation_ratio"] = arrays["variation_ratio"].astype(np.float64)
    if output.decision is not None:
        arrays["abstain"] = np.asarray(output.decision.abstain, np.bool_)
        arrays["abstain_score"] = np.asarray(output.decision.score_values, np.float64)
    if output.sample_outputs is not None:
        arrays[SAMPLES] = output.sample_outputs
    return arrays
