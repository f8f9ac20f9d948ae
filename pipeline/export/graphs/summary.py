"""The server's uncertainty summary as TensorFlow ops, for ``mc_summary.tflite``: one invoke, T samples drawn
inside the graph, the summary out — what an app on a phone or in a browser would otherwise re-implement.

Every quantity is computed as ``mcdrop.serving.core.uncertainty`` computes it (same definitions, same
clamping of ``0 log 0``), in float32 with builtin LiteRT ops only:

* classification (samples ``[T, B, ..., C]``): ``mean``, ``std`` (population), ``predicted_class``
  (int32, argmax of the mean), ``predictive_entropy``, ``expected_entropy``, ``mutual_information``
  (clamped at 0), ``variation_ratio`` (1 - modal votes / T);
* regression (samples ``[T, B, ...]``): ``mean``, ``std``, ``predictive_std`` (sqrt(std² + 1/tau),
  the manifest's observation noise; ``std`` where there is none), ``lower`` and ``upper`` (the central
  95 % predictive interval, mean -/+ 1.95996 predictive_std). The server's ``mean_lower``/``mean_upper``
  (empirical quantiles of the samples) are left out: they need a sort over T.

A model with several outputs names each field ``OUTPUT/FIELD`` (as the Open Inference Protocol answers do);
one output keeps the bare field names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mcdrop.serving.core.uncertainty import normal_quantile
from mcdrop.serving.models.manifest import Task

CLASSIFICATION_FIELDS = ("mean", "std", "predicted_class", "predictive_entropy", "expected_entropy",
                         "mutual_information", "variation_ratio")  # fmt: skip
REGRESSION_FIELDS = ("mean", "std", "predictive_std", "lower", "upper")
LEVEL = 0.95
_TINY = float(np.finfo(np.float32).tiny)


@dataclasses.dataclass(frozen=True)
class OutputSummary:
    """What the summary of one model output needs: its name, task and observation-noise variance (1/tau)."""

    name: str
    task: Task
    noise_variance: tuple[float, ...] | None = None
    """One value per output unit (regression), or None (epistemic only)."""

    def fields(self) -> tuple[str, ...]:
        return CLASSIFICATION_FIELDS if self.task == Task.CLASSIFICATION else REGRESSION_FIELDS


def output_names(outputs: Sequence[OutputSummary]) -> list[str]:
    """The summary graph's output names, in the order it returns them."""
    prefixes = [f"{o.name}/" if len(outputs) > 1 else "" for o in outputs]
    return [prefix + field for o, prefix in zip(outputs, prefixes, strict=True) for field in o.fields()]


SCOPE = "mcdrop_summary"
"""The name scope of the summary arithmetic: a full-integer variant keeps these ops in float32 (``SCOPE`` names
them), since entropies and mutual information are differences of logs that int8 steps would swamp, and int8 LOG
and SQRT kernels are missing from runtimes before 2024 (tflite-runtime 2.14)."""


def summarise(samples: Sequence[tf.Tensor], outputs: Sequence[OutputSummary]) -> list[tf.Tensor]:
    """The summary tensors of every output's ``[T, B, ...]`` samples, in ``output_names`` order."""
    found: list[tf.Tensor] = []
    with tf.name_scope(SCOPE):
        for tensor, output in zip(samples, outputs, strict=True):
            if output.task == Task.CLASSIFICATION:
                found.extend(classification(tensor))
            else:
                found.extend(regression(tensor, output.noise_variance))
    return found


def classification(samples: tf.Tensor) -> list[tf.Tensor]:
    """``CLASSIFICATION_FIELDS`` of ``[T, B, ..., C]`` class-probability samples."""
    p = tf.cast(samples, tf.float32)
    count = tf.cast(tf.shape(p)[0], tf.float32)
    classes = p.shape[-1]
    mean = tf.reduce_mean(p, axis=0)
    variance = tf.reduce_mean(tf.square(p - mean), axis=0)  # two passes: float32 one-pass moments cancel
    predictive = -tf.reduce_sum(mean * tf.math.log(tf.maximum(mean, _TINY)), axis=-1)
    expected = -tf.reduce_sum(tf.reduce_mean(p * tf.math.log(tf.maximum(p, _TINY)), axis=0), axis=-1)
    votes = tf.one_hot(tf.argmax(p, axis=-1, output_type=tf.int32), classes, dtype=tf.float32)
    modal = tf.reduce_max(tf.reduce_sum(votes, axis=0), axis=-1)
    return [
        mean,
        tf.sqrt(variance),
        tf.argmax(mean, axis=-1, output_type=tf.int32),
        predictive,
        expected,
        tf.maximum(predictive - expected, 0.0),  # >= 0 by Jensen; rounding can leave a tiny negative
        1.0 - modal / count,
    ]


def regression(samples: tf.Tensor, noise_variance: Sequence[float] | None) -> list[tf.Tensor]:
    """``REGRESSION_FIELDS`` of ``[T, B, ...]`` samples with observation-noise variance per output unit."""
    y = tf.cast(samples, tf.float32)
    mean = tf.reduce_mean(y, axis=0)
    variance = tf.reduce_mean(tf.square(y - mean), axis=0)
    if noise_variance is None:
        # Equal to std, computed by other ops: the converter would fold sqrt(variance + 0) into std's tensor, and a
        # graph output listed twice can carry only one name.
        predictive_std = tf.sqrt(tf.maximum(variance, 0.0))
    else:
        predictive_std = tf.sqrt(variance + tf.reshape(tf.constant(noise_variance, tf.float32), y.shape[2:]))
    half_width = normal_quantile(LEVEL) * predictive_std
    return [mean, tf.sqrt(variance), predictive_std, mean - half_width, mean + half_width]
