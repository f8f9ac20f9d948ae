"""TensorFlow Serving's Predict API as mcdrop speaks it, for both transports: every fact once.

gRPC (``mcdrop.serving.grpc.tfserving``: ``tensorflow.serving.PredictionService`` and ``ModelService``) and REST
(``mcdrop.serving.rest.tfserving``: ``/v1/models/...``) only convert their messages to and from what is here. The
answers are the Open Inference Protocol's (``mcdrop.serving.protocols.oip``) under TensorFlow Serving's names, so a
seeded request gets the same numbers over every API.

- **Signatures.** ``serving_default``: the model's inputs, as a TensorFlow Serving client sends them. ``mc_dropout``:
  the same, plus the Monte-Carlo controls as optional scalar inputs (with their defaults in ``defaults``). Both
  have the same outputs, and both take the controls: the second signature only documents them (and gives
  tools such as perf_analyzer, which send every input of a signature, a way to send them).
- **Outputs.** A model output keeps its name (``y`` for a single-output model) and holds the Monte-Carlo mean, so a
  caller that reads its usual output gets the mean. The uncertainty fields are further outputs: ``std``,
  ``mutual_information``, … for a model with one output, ``OUTPUT/FIELD`` (``cls/std``) for several, as in the OIP.
- **Controls.** ``mc_samples`` (int64), ``seed`` (int64), ``mode`` (string), ``return_samples`` (bool),
  ``interval``, ``abstain_threshold`` (double), ``abstain_score``, ``variant`` (string): the OIP's request
  parameters, as scalar inputs (Predict has no parameters field).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mcdrop.serving.core.requests import Prediction, PredictionRequest
from mcdrop.serving.errors import InvalidArgument, NotFound, Unimplemented
from mcdrop.serving.models.manifest import Task
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import oip
from mcdrop.serving.protocols.outputs import ABSTAIN_OUTPUTS, SAMPLES, output_names, prefix

__all__ = [
    "CONTROLS",
    "MC_SIGNATURE",
    "METHOD_NAME",
    "SIGNATURE",
    "SIGNATURE_DEF",
    "Selection",
    "answer",
    "model_spec",
    "predict_request",
    "signature_def_map",
    "unimplemented",
    "version_status",
]

SIGNATURE = "serving_default"
MC_SIGNATURE = "mc_dropout"
SIGNATURES = (SIGNATURE, MC_SIGNATURE)
METHOD_NAME = "tensorflow/serving/predict"
SIGNATURE_DEF = "signature_def"
"""The one metadata field GetModelMetadata answers."""

_DTYPE_OF_KIND = {"int64": "DT_INT64", "string": "DT_STRING", "bool": "DT_BOOL", "double": "DT_DOUBLE"}
CONTROLS = {name: _DTYPE_OF_KIND[parameter.kind] for name, parameter in oip.PARAMETERS.items()}
"""The Monte-Carlo controls, as scalar inputs: the OIP's request parameters with their TensorFlow dtypes."""
DTYPE_OF_DATATYPE = {"FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "INT64": "DT_INT64", "BOOL": "DT_BOOL"}


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outputs a Predict answers: ``(TensorFlow name, OIP name)`` pairs; empty = the default set."""

    outputs: tuple[tuple[str, str], ...]
    default: str
    """``signature``: every output but ``samples`` (gRPC, as TensorFlow Serving answers all of a signature's
    outputs); ``model``: the model's outputs only, i.e. the means (REST, whose answers a TensorFlow Serving caller
    parses by shape: one output gives a list of values per instance)."""


def output_names_of(version: ModelVersion) -> dict[str, str]:
    """OIP output name → TensorFlow Serving output name, for every output a request may ask for."""
    return _output_names(tuple((spec.name, spec.task) for spec in version.outputs))


@functools.lru_cache(maxsize=256)
def _output_names(outputs: tuple[tuple[str, Task], ...]) -> dict[str, str]:
    names: dict[str, str] = {}
    several = len(outputs) > 1
    for name, task in outputs:
        start = prefix(name, len(outputs))
        fields = [*output_names(task), *(ABSTAIN_OUTPUTS if task == Task.CLASSIFICATION else ()), SAMPLES]
        for field in fields:
            if field == "mean":
                names[start + field] = name
            elif several or field == name:  # a single output named like a field keeps the field apart
                names[start + field] = f"{name}/{field}"
            else:
                names[start + field] = field
    return names


def signature_def_map(version: ModelVersion, default_variant: str) -> dict[str, Any]:
    """The ``signature_def`` metadata, as TensorFlow Serving's REST API prints a ``SignatureDefMap`` (proto JSON:
    int64 as strings, bytes in base64); gRPC parses the same into the message."""
    tf_name = output_names_of(version)
    inputs = {spec.name: _tensor_info(spec.name, "DT_FLOAT", spec.shape) for spec in version.inputs}
    outputs = {tf_name[name]: _tensor_info(name, DTYPE_OF_DATATYPE[datatype], shape)
               for name, datatype, shape in oip.output_tensors(version)}  # fmt: skip
    controls = {name: _tensor_info(name, dtype, ()) for name, dtype in CONTROLS.items()}
    default_mode = "monte_carlo" if version.stochastic else "deterministic"
    variant = default_variant if default_variant in version.variants else "float32"
    defaults = {"mode": _string_tensor(default_mode), "return_samples": _scalar("DT_BOOL", "bool_val", False),
                "variant": _string_tensor(variant)}  # fmt: skip
    if version.stochastic:
        defaults["mc_samples"] = _scalar("DT_INT64", "int64_val", str(version.default_samples))
    return {
        SIGNATURE_DEF: {
            SIGNATURE: {"inputs": inputs, "outputs": outputs, "method_name": METHOD_NAME},
            MC_SIGNATURE: {
                "inputs": {**inputs, **controls},
                "outputs": outputs,
                "method_name": METHOD_NAME,
                "defaults": dict(sorted(defaults.items())),
            },
        }
    }


def _tensor_info(name: str, dtype: str, shape: Sequence[int]) -> dict[str, Any]:
    dims = [{"size": str(d), "name": ""} for d in shape]
    return {"dtype": dtype, "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}


def _scalar(dtype: str, field: str, value: Any) -> dict[str, Any]:
    return {"dtype": dtype, "tensor_shape": {"dim": [], "unknown_rank": False}, field: [value]}


def _string_tensor(text: str) -> dict[str, Any]:
    return _scalar("DT_STRING", "string_val", base64.b64encode(text.encode()).decode())


def model_spec(name: str, version: int, signature_name: str) -> dict[str, Any]:
    """A response's ``model_spec``: the model, version and signature that answered."""
    return {"name": name, "version": str(version), "signature_name": signature_name}


def signature_of(name: str) -> str:
    """The signature a request names (empty: ``serving_default``), checked."""
    if not name:
        return SIGNATURE
    if name not in SIGNATURES:
        raise InvalidArgument(f"Unknown signature_name {name!r}. Expected {SIGNATURE} (or empty) or {MC_SIGNATURE}.")
    return name


def predict_request(
    version: ModelVersion,
    signature_name: str,
    inputs: Mapping[str, Any],
    output_filter: Sequence[str],
    default: str,
) -> tuple[PredictionRequest, Selection]:
    """The data-plane request of a Predict call and the outputs to answer with.

    ``inputs``: by name, the model's inputs (numpy arrays of any numeric dtype; the core converts to float32 and
    checks shapes and ranges) and any controls (a scalar: a Python value, or a one-element array).
    """
    signature_of(signature_name)
    model_inputs = [spec.name for spec in version.inputs]
    unknown = [name for name in inputs if name not in model_inputs and name not in CONTROLS]
    missing = [name for name in model_inputs if name not in inputs]
    if unknown or missing:
        detail = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                             f"unknown {unknown}" if unknown else "") if part)  # fmt: skip
        raise InvalidArgument(
            f"Model {version.name!r} takes inputs {model_inputs}, and optionally the scalar controls "
            f"{', '.join(CONTROLS)}. Received: {list(inputs)} ({detail})"
        )
    params = {}
    for name in (n for n in inputs if n in CONTROLS):
        value = oip.check_parameter(name, _control_value(name, inputs[name]))
        if value is not None:
            params[name] = value
    x = {name: np.asarray(inputs[name]) for name in model_inputs}
    for name, array in x.items():
        if array.dtype.kind not in "fiub":
            raise InvalidArgument(f"Invalid dtype of input {name!r}. Expected numbers (DT_FLOAT). "
                                  f"Received: {array.dtype.name}")  # fmt: skip
    tf_name = output_names_of(version)
    selection = _selection(version, tf_name, output_filter, params, default)
    decoded, _ = oip.infer_request(version, x, params, [oip_name for _, oip_name in selection.outputs])
    return decoded, selection


def _control_value(name: str, value: Any) -> Any:
    """A control's Python value: from a scalar or one-element array (strings as bytes or text)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InvalidArgument(f"Invalid control input {name!r}. Expected a scalar ({CONTROLS[name]}). "
                                  f"Received shape {list(value.shape)}")  # fmt: skip
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"Invalid control input {name!r}. Expected UTF-8 text.") from None
    return value


def _selection(
    version: ModelVersion, tf_name: dict[str, str], output_filter: Sequence[str], params: Mapping[str, Any],
    default: str,
) -> Selection:  # fmt: skip
    if not output_filter:
        if default == "model" and not params.get("return_samples"):
            means = [prefix(spec.name, len(version.outputs)) + "mean" for spec in version.outputs]
            return Selection(tuple((tf_name[name], name) for name in means), default)
        return Selection((), default)
    abstaining = "abstain_threshold" in params or "abstain_score" in params
    advertised = {tf_name[name]: name for name, _, _ in oip.output_tensors(version, abstaining)}
    unknown = [name for name in output_filter if name not in advertised]
    if unknown:
        raise InvalidArgument(f"output_filter names unknown output(s) {unknown}. Expected any of: "
                              + ", ".join(advertised))  # fmt: skip
    repeated = sorted({name for name in output_filter if list(output_filter).count(name) > 1})
    if repeated:
        raise InvalidArgument(f"output_filter names {repeated} more than once. Expected each output once.")
    return Selection(tuple((name, advertised[name]) for name in output_filter), default)


def answer(version: ModelVersion, prediction: Prediction, selection: Selection) -> dict[str, np.ndarray]:
    """The Predict outputs by TensorFlow Serving name, in the order asked for (else the signature's)."""
    arrays = oip.selected_outputs(prediction, [oip_name for _, oip_name in selection.outputs])
    if selection.outputs:
        return {tf_name: arrays[oip_name] for tf_name, oip_name in selection.outputs}
    tf_name = output_names_of(version)
    return {tf_name[name]: array for name, array in arrays.items()}


def version_status(loaded: Sequence[int], failed: Mapping[int, str], version: int | None) -> list[dict[str, Any]]:
    """``model_version_status`` entries as TensorFlow Serving's REST API prints them: every loaded version
    (``AVAILABLE``) and every version that failed to load (``END``, with the reason), or only ``version``."""
    entries = {v: ("AVAILABLE", "OK", "") for v in loaded}
    entries |= {v: ("END", "UNKNOWN", reason) for v, reason in failed.items() if v not in entries}
    if version is not None and version not in entries:
        known = ", ".join(str(v) for v in sorted(entries)) or "none"
        raise NotFound(f"Version {version} of the model is neither loaded nor failed to load. Known versions: {known}.")
    chosen = sorted(entries, reverse=True) if version is None else [version]
    return [{"version": str(v), "state": entries[v][0],
             "status": {"error_code": entries[v][1], "error_message": entries[v][2]}} for v in chosen]  # fmt: skip


_INSTEAD = ("Expected Predict (gRPC) or POST /v1/models/NAME:predict, which answers the model's outputs (the "
            "Monte-Carlo mean, e.g. class probabilities) and their uncertainty.")  # fmt: skip
_EXAMPLES = "it works on tf.Example inputs, which mcdrop's models (LiteRT graphs of tensors) do not take. "
UNIMPLEMENTED = {
    "Classify": _EXAMPLES + _INSTEAD,
    "Regress": _EXAMPLES + _INSTEAD,
    "MultiInference": "it runs Classify and Regress tasks on tf.Example inputs, which mcdrop's models do not take. "
    + _INSTEAD,
    "HandleReloadConfigRequest": "mcdrop serves the versions in its repository (a new version folder loads while "
    "serving; --max-versions keeps the newest, --version-labels names them), not a pushed ModelServerConfig.",
}
"""TensorFlow Serving's methods mcdrop does not serve, and why."""


def unimplemented(method: str) -> Unimplemented:
    """The refusal of one of ``UNIMPLEMENTED``'s methods."""
    return Unimplemented(f"mcdrop does not serve TensorFlow Serving's {method}: {UNIMPLEMENTED[method]}")
