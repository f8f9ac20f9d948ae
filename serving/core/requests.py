"""The prediction core's contract: what a caller asks for, what it gets back, and the limits it may impose.

Transports decode their messages into a ``PredictionRequest`` (numpy input, plain Python values) and
encode a ``Prediction`` back; batch scoring builds requests from table rows. ``Limits`` are the
caller's: a server passes its settings' limits, batch scoring passes none.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

import numpy as np

from mcdrop.serving.core import uncertainty
from mcdrop.serving.models.manifest import FLOAT32, Task

__all__ = ["DEFAULT_INTERVAL", "MAX_SEED", "Decision", "Limits", "Mode", "OutputPrediction", "Prediction",
           "PredictionRequest"]  # fmt: skip

DEFAULT_INTERVAL = 0.95
MAX_SEED = 2**64 - 1


class Mode(enum.StrEnum):
    """How a prediction is computed: one pass without dropout, T Monte-Carlo samples, or one pass of the moments
    graph (an approximation of Monte Carlo's answer; ``mcdrop.serving.core.moments``)."""

    DETERMINISTIC = "deterministic"
    MONTE_CARLO = "monte_carlo"
    MOMENTS = "moments"


@dataclasses.dataclass
class PredictionRequest:
    model: str
    x: np.ndarray | None = None
    """The rows of a single-input model (its input ``x``); ``inputs`` instead for a model with several."""
    version: int | None = None
    mode: str | None = None
    """``deterministic``, ``monte_carlo``, ``moments`` (any case) or None (Monte Carlo if the model has dropout)."""
    samples: int | None = None
    """T; None means the model's default."""
    seed: int | None = None
    return_samples: bool = False
    interval: float | None = None
    tolerance: float | None = None
    max_samples: int = 0
    chunk: int = 0
    first_row: int = 0
    """Position of ``x[0]`` in a larger input: with a seed, a row's masks depend only on the seed and its
    position, so batch scoring over any partitioning matches one request over all rows."""
    inputs: Mapping[str, np.ndarray] | None = None
    """Rows by input name (the manifest's ``inputs``), every input with the same batch B; instead of ``x``."""
    abstain_threshold: float | None = None
    """Abstain above this score instead of the calibrated threshold (``mcdrop.serving.core.decision``)."""
    abstain_score: str | None = None
    """Abstain by this score (``mcdrop.serving.core.scores``) instead of the calibrated one."""
    request_id: str = ""
    """The caller's id of the request (OIP ``id``, else an ``x-request-id`` header): kept with captured rows."""
    variant: str | None = None
    """Which exported graphs answer: ``float32``, or a quantised variant (``float16``, ``dynamic-int8``, ``int8``,
    ``int8-io``); None: the server's default (``mcdrop serve --variant``) where the version has it, else float32."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """A classification output's abstentions: ``abstain[b]`` is true when ``score_values[b] > threshold``."""

    score: str
    threshold: float
    score_values: np.ndarray
    """``[B]`` float64."""
    abstain: np.ndarray
    """``[B]`` bool."""


@dataclasses.dataclass
class OutputPrediction:
    """The estimate for one model output."""

    name: str
    """``y`` for a single-output model, else the model's output name."""
    task: Task
    class_labels: list[str]
    summary: uncertainty.ClassificationSummary | uncertainty.RegressionSummary
    sample_outputs: np.ndarray | None
    """``[T, B, ...]`` samples, when they were asked for."""
    noise_variance: np.ndarray | None = None
    """Regression: the observation-noise variance behind ``predictive_std``; None = epistemic only."""
    decision: Decision | None = None
    """Classification of a calibrated version (or a request with an abstain threshold): which rows to abstain on."""
    interval_calibration: str | None = None
    """Regression of a calibrated version: ``conformal`` or ``gaussian`` intervals; None for uncalibrated versions
    (Gaussian, and answered exactly as before calibration existed)."""


@dataclasses.dataclass
class Prediction:
    """The estimate for every output of the model; the ``task`` … ``noise_variance`` properties are the first
    (for most models the only) output's."""

    model: str
    version: int
    mode: Mode
    samples: int
    """Samples behind the answer: T model samples (Monte Carlo), logit draws (moments classification), else 0
    (moments regression: closed form) or 1 (deterministic)."""
    seed: int | None
    outputs: tuple[OutputPrediction, ...]
    final: bool
    max_standard_error: float
    """Largest standard error of the MC mean over every output."""
    queue_ms: float
    compute_ms: float
    variant: str = FLOAT32
    """The graphs that answered (``PredictionRequest.variant``)."""

    @property
    def task(self) -> Task:
        return self.outputs[0].task

    @property
    def class_labels(self) -> list[str]:
        return self.outputs[0].class_labels

    @property
    def summary(self) -> uncertainty.ClassificationSummary | uncertainty.RegressionSummary:
        return self.outputs[0].summary

    @property
    def sample_outputs(self) -> np.ndarray | None:
        return self.outputs[0].sample_outputs

    @property
    def noise_variance(self) -> np.ndarray | None:
        return self.outputs[0].noise_variance

    def output(self, name: str) -> OutputPrediction:
        """The estimate of output ``name``."""
        for output in self.outputs:
            if output.name == name:
                return output
        raise KeyError(f"No output {name!r}. Outputs: {[o.name for o in self.outputs]}")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on one request; None = unbounded. A server passes its settings', batch scoring passes ``Limits()``."""

    max_samples: int | None = None
    """Largest T (and the adaptive ``max_samples`` when a request gives none)."""
    max_batch: int | None = None
    max_sample_rows: int | None = None
    """Largest T x batch."""
    max_request_gflops: float | None = None
    """Largest compute: rows x (prefix + T x per-sample) FLOPs, from the manifest's cost."""
