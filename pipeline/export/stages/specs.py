"""The model's inputs and outputs as the manifest records them: task, class labels, target names, observation noise.

Each fact comes from the first place that has it: the export's options, else the training record mcdrop wrote
(``training.json``), else the model itself (a softmax output is a classifier).
"""

from __future__ import annotations

import math
from typing import Any

from mcdrop.pipeline.export.graphs.summary import OutputSummary
from mcdrop.pipeline.export.model import signature
from mcdrop.pipeline.export.model.inputs import token_count
from mcdrop.pipeline.export.options import ExportOptions, setting
from mcdrop.pipeline.training.observation_noise import noise_record
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.manifest import InputSpec, ObservationNoise, OutputSpec, Task

__all__ = ["EPISTEMIC_ONLY", "input_specs", "output_specs", "summary_spec", "tasks"]

EPISTEMIC_ONLY = {
    "precision": None,
    "variance": None,
    "method": "epistemic only: no observation-noise estimate (train with mcdrop train, or export with "
    f"{setting('noise_precision')} TAU); intervals cover the model's uncertainty, not the noise of y",
}


def tasks(options: ExportOptions, model: Any, training: dict[str, Any] | None, names: list[str]) -> list[Task]:
    """The task of each output: the ``task`` option (``KIND``, or ``NAME=KIND`` per output), else the training
    record's, else the output layer's activation (softmax: classification)."""
    given = _given_tasks(options.task, names)
    recorded = _recorded_outputs(training, names)
    found = []
    for index, name in enumerate(names):
        if name in given:
            found.append(given[name])
        elif recorded.get(name, {}).get("task") in set(Task):
            found.append(Task(recorded[name]["task"]))
        else:
            layer = getattr(model.outputs[index], "_keras_history", None)
            activation = getattr(getattr(layer, "operation", None), "activation", None)
            if len(names) == 1:
                activation = getattr(model.layers[-1], "activation", None)
            softmax = getattr(activation, "__name__", "") == "softmax"
            found.append(Task.CLASSIFICATION if softmax else Task.REGRESSION)
    return found


def _given_tasks(text: str | None, names: list[str]) -> dict[str, Task]:
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    if not parts:
        return {}
    pairs = [(name, parts[0]) for name in names] if len(parts) == 1 and "=" not in parts[0] else []
    for part in parts if not pairs else ():
        name, _, kind = part.partition("=")
        if not kind or name not in names:
            raise InvalidArgument(
                f"Invalid {setting('task')} {part!r}. Expected KIND, or NAME=KIND with NAME one of the model's "
                f"outputs {names}."
            )
        pairs.append((name, kind))
    for _, kind in pairs:
        if kind not in set(Task):
            raise InvalidArgument(f"Invalid task {kind!r}. Expected {' or '.join(Task)}.")
    return {name: Task(kind) for name, kind in pairs}


def _recorded_outputs(training: dict[str, Any] | None, names: list[str]) -> dict[str, dict[str, Any]]:
    """What the training record says of each output: ``outputs`` (several heads), or the single output's
    ``task``, class labels, target names and observation noise."""
    record = training or {}
    if isinstance(record.get("outputs"), list):
        return {str(o.get("name")): o for o in record["outputs"] if isinstance(o, dict)}
    if len(names) != 1:
        return {}
    dataset = record.get("dataset", {}) or {}
    return {names[0]: {"task": record.get("task"), "class_labels": dataset.get("class_labels"),
                       "target_names": dataset.get("target_names"),
                       "observation_noise": record.get("observation_noise")}}  # fmt: skip


def output_specs(
    options: ExportOptions, model: Any, training: dict[str, Any] | None, tasks: list[Task], names: list[str]
) -> tuple[OutputSpec, ...]:
    """Every output as the manifest records it, in ``model.outputs`` order.

    Raises:
        InvalidArgument: ``noise_precision`` or ``labels`` given for a model they do not apply to, or the wrong
            number of class labels.
    """
    recorded = _recorded_outputs(training, names)
    classifiers = [name for name, task in zip(names, tasks, strict=True) if task is Task.CLASSIFICATION]
    regressors = [name for name, task in zip(names, tasks, strict=True) if task is Task.REGRESSION]
    if options.noise_precision and len(regressors) != 1:
        raise InvalidArgument(
            f"{setting('noise_precision')} applies to regression models. This model is a classifier." if not regressors
            else f"{setting('noise_precision')} applies to a model's one regression output. This model has several: "
            f"{regressors}."
        )  # fmt: skip
    if options.labels is not None and len(classifiers) != 1:
        raise InvalidArgument(f"{setting('labels')} applies to a model's one classification output. This model has "
                              f"{len(classifiers)}: {classifiers}.")  # fmt: skip
    found = []
    for name, task, tensor in zip(names, tasks, model.outputs, strict=True):
        shape = tuple(int(d) for d in tensor.shape[1:])
        record = recorded.get(name, {})
        labels = options.labels if options.labels is not None else record.get("class_labels")
        labels = labels if task is Task.CLASSIFICATION else None
        if labels is not None and len(labels) != shape[-1]:
            where = "" if len(names) == 1 else f" for output {name!r}"
            raise InvalidArgument(
                f"{len(labels)} class labels given{where}. Expected {shape[-1]}, one per output unit."
            )
        noise = None
        if task is Task.REGRESSION:
            noise = _observation_noise(options.noise_precision, shape, record.get("observation_noise"))
        targets = record.get("target_names")
        found.append(OutputSpec(
            name=name,
            shape=(-1, *shape),
            dtype="float32",
            target_names=None if targets is None else tuple(targets),
            observation_noise=None if noise is None else ObservationNoise.from_json(noise, f"{name}.observation_noise"),
            task=task,
            class_labels=None if labels is None else tuple(labels),
        ))  # fmt: skip
    return tuple(found)


def _observation_noise(given: tuple[float, ...], output_shape: tuple[int, ...], recorded: Any) -> dict[str, Any]:
    """tau per output unit of one regression output: the ``noise_precision`` option (``given``), else the training
    record's (``recorded``), else none."""
    outputs = math.prod(output_shape)
    if given:
        if len(given) not in (1, outputs):
            raise InvalidArgument(
                f"{setting('noise_precision')} takes one value or one per output ({outputs}). "
                f"Received: {len(given)} values"
            )
        values = list(given) * (outputs if len(given) == 1 else 1)
        return noise_record(values, method=f"given at export ({setting('noise_precision')})")
    if isinstance(recorded, dict) and len(recorded.get("precision") or []) == outputs:
        return noise_record(recorded["precision"], method=str(recorded.get("method", "training record")))
    return EPISTEMIC_ONLY


def input_specs(model: Any, training: dict[str, Any] | None) -> tuple[InputSpec, ...]:
    """Every input as the graphs take it (float32, cast inside to the model's dtype), with its training columns."""
    specs = signature.model_inputs(model)
    record = training or {}
    recorded = {str(i.get("name")): i for i in record.get("inputs", []) if isinstance(i, dict)}
    found = []
    for index, spec in enumerate(specs):
        if len(specs) == 1:
            columns, tokens = (record.get("dataset", {}) or {}).get("feature_names"), token_count(model)
            # (a model whose only input is one categorical column records it under ``inputs``)
            own = next(iter(recorded.values())) if len(recorded) == 1 else {}
            columns = columns or own.get("feature_names")
        else:
            own = recorded.get(spec.name, {})
            columns, tokens = own.get("feature_names"), token_count(model, index)
        categories = own.get("vocabulary") if own.get("categorical") else None
        found.append(InputSpec(
            name=spec.name,
            shape=(-1, *spec.row_shape),
            dtype="float32",  # every graph takes float32 inputs and casts them to the model's own input dtype
            model_dtype=spec.dtype.name,
            feature_names=None if columns is None else tuple(columns),
            integer_range=None if tokens is None else (0, tokens - 1),
            categories=None if categories is None else tuple(str(c) for c in categories),
        ))  # fmt: skip
    return tuple(found)


def summary_spec(output: OutputSpec) -> OutputSummary:
    """What ``mc_summary`` needs of an output: its name, task and observation-noise variance."""
    noise = output.observation_noise
    variance = None if noise is None or noise.variance is None else tuple(float(v) for v in noise.variance)
    return OutputSummary(output.name, output.task, variance)
