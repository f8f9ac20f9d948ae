"""The first stage: load the model and describe it, once, as the typed ``Subject`` every later stage reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from mcdrop.pipeline.export.graphs import forward
from mcdrop.pipeline.export.graphs.summary import OutputSummary
from mcdrop.pipeline.export.model import inputs, keras_internals, loading, rows, selection, signature, sites
from mcdrop.pipeline.export.model.rows import DataRows
from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.pipeline.export.options import ExportOptions
from mcdrop.pipeline.export.stages import specs
from mcdrop.serving.models.manifest import InputSpec, OutputSpec, Task

__all__ = ["VERIFY_ROWS", "Step", "Subject", "describe"]

VERIFY_ROWS = 4
"""Input rows of the verification checks."""

Step = Callable[[str], None]
"""Called with a short description before each stage (for progress display)."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """The model being exported and everything the stages need to know about it."""

    options: ExportOptions
    model: Any
    """The loaded Keras model."""
    training: dict[str, Any] | None
    """The training record (``training.json``) if mcdrop trained the model."""
    mc_layers: str
    """The normalised ``mc_layers`` option."""
    sites: list[DropoutSite]
    """The sampled dropout sites (stochastic in the Monte-Carlo graphs)."""
    inactive: list[DropoutSite]
    """Dropout sites left out of sampling by ``mc_layers``: they run as in inference."""
    output_names: list[str]
    tasks: list[Task]
    inputs: tuple[InputSpec, ...]
    """Every input as the manifest records it."""
    outputs: tuple[OutputSpec, ...]
    """Every output as the manifest records it."""
    summary: list[OutputSummary]
    """What ``mc_summary`` needs of each output (empty for a model without dropout)."""
    x: dict[str, np.ndarray]
    """The verification rows, by graph input name: ``VERIFY_ROWS`` of ``data``, else drawn (``inputs.check_inputs``)."""
    data: DataRows | None
    """Real rows (``--verify-data``, else the calibration data's inputs), or None: drawn rows only."""
    row_shapes: dict[str, tuple[int, ...]]
    """One row's shape of each input, by graph input name."""


def describe(options: ExportOptions, step: Step) -> Subject:
    """Import the user's modules, load the model and find its dropout sites, tasks and output specs.

    Raises:
        NotFound / InvalidArgument: the model file or options are unusable.
        ExportError: the model cannot be loaded, or draws randomness mcdrop cannot export.
    """
    keras_internals.check_supported()  # before loading: Keras's own loader needs some of them too
    if options.imports:
        step("importing " + ", ".join(options.imports))
        loading.import_modules(options.imports)
    step("loading model")
    model = loading.load_model(options.model_path)
    training = loading.training_record(options.model_path)

    step("finding dropout sites")
    found = sites.describe(model)
    mc_layers = selection.parse(options.mc_layers)
    upstream = forward.upstream_owners(model, found) if mc_layers == selection.LAST and found else {}
    chosen = selection.select(mc_layers, found, upstream)
    model_inputs = signature.model_inputs(model)
    output_names = signature.output_names(model)
    tasks = specs.tasks(options, model, training, output_names)
    outputs = specs.output_specs(options, model, training, tasks, output_names)
    input_specs = specs.input_specs(model, training)
    calibration = options.calibration.data if options.calibration is not None else None
    if options.verify_data is not None or calibration is not None:
        step("reading verification rows")
    data = rows.read(_Tensors(input_specs, outputs), options.verify_data, calibration)
    if data is not None:
        x = data.pick(VERIFY_ROWS)
    else:
        x = inputs.check_inputs(model, model_inputs, training, VERIFY_ROWS, options.seed)
    return Subject(
        options=options,
        model=model,
        training=training,
        mc_layers=mc_layers,
        sites=chosen.sampled,
        inactive=chosen.unsampled,
        output_names=output_names,
        tasks=tasks,
        inputs=input_specs,
        outputs=outputs,
        summary=[specs.summary_spec(spec) for spec in outputs] if chosen.sampled else [],
        x=x,
        data=data,
        row_shapes={spec.name: spec.row_shape for spec in model_inputs},
    )


@dataclasses.dataclass(frozen=True)
class _Tensors:
    """The model's inputs and outputs before there is a manifest (``ModelTensors``)."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
