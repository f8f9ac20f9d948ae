"""The Open Inference Protocol (KServe V2) as mcdrop speaks it, for both transports: every fact once.

gRPC (``mcdrop.serving.grpc.oip``) and REST (``mcdrop.serving.rest``) only convert their messages to
and from what is here: the server and model metadata, the inputs (``x`` for a single-input model, else
one FP32 tensor per model input, by the manifest's names), the outputs a model advertises (``mean``,
``mutual_information``, …; ``OUTPUT/FIELD`` such as ``cls/mean`` for a model with several outputs, see
``mcdrop.serving.protocols.outputs``), the request ``parameters`` mcdrop understands and the response
parameters it echoes::

    mc_samples (int64)  seed (int64)  mode (string)  return_samples (bool)  interval (double)
    abstain_threshold (double)  abstain_score (string)  variant (string)

A seeded request therefore gets the same numbers over either transport. No ``grpc`` import here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from mcdrop.serving import __version__
from mcdrop.serving.core import decision
from mcdrop.serving.core.requests import Prediction, PredictionRequest
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.calibration import ClassificationCalibration
from mcdrop.serving.models.manifest import FLOAT32, Task
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols.outputs import SAMPLES, output_arrays, output_names, prefix
from mcdrop.serving.protocols.tensors import check_shape
from mcdrop.serving.protocols.variants import variant_facts

__all__ = [
    "DATATYPES",
    "IGNORED_PARAMETERS",
    "PARAMETERS",
    "PLATFORM",
    "Parameter",
    "check_input",
    "check_inputs",
    "datatype_of",
    "infer_request",
    "model_config",
    "model_metadata",
    "output_tensors",
    "parse_version",
    "response_parameters",
    "server_metadata",
]

PLATFORM = "litert_mcdropout"
BACKEND = "mcdrop"
RUNTIME = "litert"
EXTENSIONS = ("mc_dropout", "binary_tensor_data", "model_configuration")
"""``binary_tensor_data``: Triton's binary tensor extension over REST (gRPC carries raw bytes natively);
``model_configuration``: Triton's model configuration (gRPC ``ModelConfig``, REST ``/v2/models/NAME/config``)."""
MAX_BATCH_SIZE = 2**31 - 1
"""Triton's ``max_batch_size`` is an int32."""

# datatype → (numpy dtype, InferTensorContents field of the gRPC protocol)
DATATYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "BOOL": (np.dtype("?"), "bool_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP16": (np.dtype("<f2"), ""),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}
_BY_NUMPY = {dtype.str.lstrip("<|"): name for name, (dtype, _) in DATATYPES.items()}


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A request parameter: its value type in the gRPC ``InferParameter`` and in JSON."""

    grpc_field: str
    """``int64_param``, ``string_param``, ``bool_param`` or ``double_param``."""
    json_types: tuple[type, ...]
    """JSON values accepted (a JSON true/false is never taken for a number)."""

    @property
    def kind(self) -> str:
        return self.grpc_field.removesuffix("_param")


PARAMETERS = {
    "mc_samples": Parameter("int64_param", (int,)),
    "seed": Parameter("int64_param", (int,)),
    "mode": Parameter("string_param", (str,)),
    "return_samples": Parameter("bool_param", (bool,)),
    "interval": Parameter("double_param", (int, float)),
    "abstain_threshold": Parameter("double_param", (int, float)),
    "abstain_score": Parameter("string_param", (str,)),
    "variant": Parameter("string_param", (str,)),
}
IGNORED_PARAMETERS = frozenset({"priority", "timeout", "triton_enable_empty_final_response"})
"""Standard scheduling hints, and the flag Triton's clients (perf_analyzer) send for decoupled models: not applicable
here."""


def server_metadata() -> dict[str, Any]:
    return {"name": "mcdrop", "version": __version__, "extensions": list(EXTENSIONS)}


def output_tensors(version: ModelVersion, abstaining: bool = False) -> list[tuple[str, str, list[int]]]:
    """``(name, datatype, shape)`` of every output the model metadata advertises, in its order: ``abstain`` and
    ``abstain_score`` for the classification outputs of a calibrated version (or of any, when ``abstaining``: a
    request that sets its own threshold)."""
    tensors: list[tuple[str, str, list[int]]] = []
    calibration = version.manifest.calibration
    outputs = calibration.outputs if calibration is not None else ()
    calibrated = {o.output for o in outputs if isinstance(o, ClassificationCalibration)}
    for spec in version.outputs:
        start = prefix(spec.name, len(version.outputs))
        output = list(spec.shape)
        for name in output_names(spec.task):
            if name in ("mean", "std") or spec.task == Task.REGRESSION:
                tensors.append((start + name, "FP32", output))
            else:
                tensors.append((start + name, "INT64" if name == "predicted_class" else "FP64", [-1]))
        if spec.task == Task.CLASSIFICATION and (abstaining or spec.name in calibrated):
            tensors += [(start + "abstain", "BOOL", [-1]), (start + "abstain_score", "FP64", [-1])]
        if version.stochastic:
            tensors.append((start + SAMPLES, "FP32", [-1, *output]))
    return tensors


def model_metadata(version: ModelVersion, loaded: list[int]) -> dict[str, Any]:
    """The model metadata response (both transports), with mcdrop's ``parameters`` extension."""
    return {
        "name": version.name,
        "versions": [str(v) for v in loaded],
        "platform": PLATFORM,
        "inputs": [{"name": spec.name, "datatype": "FP32", "shape": list(spec.shape)} for spec in version.inputs],
        "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in output_tensors(version)],
        "parameters": {
            **version.uncertainty_source(),
            **decision.metadata(version.manifest),
            **_variants_metadata(version),
        },
    }


def model_config(version: ModelVersion, loaded: list[int], max_batch: int) -> dict[str, Any]:
    """Triton's model configuration of a version, as Triton's REST API prints it (gRPC parses the same into the
    message): what perf_analyzer and Triton's clients read before they send anything.

    ``max_batch``: the server's ``--max-batch``; dims leave out the batch. Outputs are the metadata's but ``samples``
    (``[T, B, ...]``: not batch-first, so outside Triton's batching); one value per row is ``dims [1]`` reshaped
    to ``[]``, Triton's way of writing a scalar per batch row. mcdrop's metadata parameters come as ``parameters``.
    """
    metadata = model_metadata(version, loaded)

    def tensor(spec: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": spec["name"], "data_type": "TYPE_" + spec["datatype"]}
        dims = list(spec["shape"][1:])
        entry |= {"dims": dims} if dims else {"dims": [1], "reshape": {"shape": []}}
        return entry

    return {
        "name": version.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "runtime": RUNTIME,
        "version_policy": {"specific": {"versions": loaded}},
        "max_batch_size": min(max_batch, MAX_BATCH_SIZE),
        "input": [tensor(spec) for spec in metadata["inputs"]],
        "output": [tensor(spec) for spec in metadata["outputs"] if not _is_samples(spec["name"])],
        "parameters": {name: {"string_value": str(value)} for name, value in metadata["parameters"].items()},
    }


def _variants_metadata(version: ModelVersion) -> dict[str, str]:
    """``variants`` (the names a request's ``variant`` may take, float32 first) and ``variant/NAME/FIGURE`` for each
    quantised one: its deterministic graph's bytes, float ops and agreement with float32."""
    facts = variant_facts(version)
    found = {"variants": ",".join(f.name for f in facts)}
    for fact in facts[1:]:
        start = f"variant/{fact.name}/"
        found |= {start + "deterministic_bytes": str(fact.deterministic_bytes),
                  start + "float_ops": ",".join(fact.float_ops),
                  **{start + key: value for key, value in fact.agreement.items()}}  # fmt: skip
    return found


def input_names(version: ModelVersion) -> list[str]:
    return [spec.name for spec in version.inputs]


def check_inputs(version: ModelVersion, names: list[Any]) -> None:
    """One tensor per model input, each named once (the order does not matter)."""
    expected = input_names(version)
    if len(expected) == 1:  # a wrongly named one gets check_input's message
        if len(names) != 1:
            raise InvalidArgument(f"Model {version.name!r} takes 1 input named {expected[0]!r}. "
                                  f"Received {len(names)}: {names}")  # fmt: skip
        return
    if len(names) == len(expected) and sorted(map(str, names)) == sorted(expected):
        return
    missing = [n for n in expected if n not in names]
    unknown = [n for n in names if n not in expected]
    repeated = sorted({str(n) for n in names if names.count(n) > 1})
    detail = "; ".join(part for part in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown
                       else "", f"repeated {repeated}" if repeated else "") if part)  # fmt: skip
    raise InvalidArgument(f"Model {version.name!r} takes inputs {expected}. Received: {names} ({detail})")


def check_input(version: ModelVersion, name: Any, datatype: Any, shape: Any) -> list[int]:
    """One input's name, datatype and shape against the metadata (-1 = any batch size); returns the shape."""
    specs = {spec.name: spec for spec in version.inputs}
    if name not in specs:
        known = ", ".join(repr(n) for n in specs)
        raise InvalidArgument(f"Unknown input {name!r}. Expected inputs: {known}.")
    which = f"input {name!r}"
    if datatype not in DATATYPES:
        raise InvalidArgument(f"Invalid datatype {datatype!r} for {which}. Expected one of {', '.join(DATATYPES)}.")
    if datatype != "FP32":
        raise InvalidArgument(f"Invalid datatype for {which}. Expected FP32. Received: {datatype}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"Invalid shape for {which}. Expected a list of integers. Received: {shape!r}")
    check_shape(shape, which)
    expected = list(specs[name].shape)
    if len(shape) != len(expected) or shape[1:] != expected[1:] or any(d < 0 for d in shape):
        raise InvalidArgument(
            f"Invalid shape for {which}. Expected {expected} (-1 = any batch size). Received: {shape}"
        )
    return shape


def check_parameter(name: str, value: Any, received: str | None = None) -> Any | None:
    """A request parameter's value, checked against ``PARAMETERS``; None for an ignored one.

    ``received``: for gRPC, which ``InferParameter`` field was set (``value`` is its value); None for JSON.
    """
    if name in IGNORED_PARAMETERS:
        return None
    if name not in PARAMETERS:
        raise InvalidArgument(f"Unknown parameter {name!r}. Expected any of: {', '.join(PARAMETERS)}")
    parameter = PARAMETERS[name]
    if received is not None:
        if received != parameter.grpc_field:
            raise InvalidArgument(
                f"Invalid type for parameter {name!r}. Expected {parameter.kind} ({parameter.grpc_field}). "
                f"Received: {received}"
            )
        return value
    kinds = parameter.json_types
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise InvalidArgument(f"Invalid type for parameter {name!r}. Expected {expected}. Received: {value!r:.40}")
    number: Any = value
    if parameter.grpc_field == "int64_param" and not -(2**63) <= number < 2**63:
        raise InvalidArgument(f"Invalid parameter {name!r}. Expected an int64. Received: {value}")
    return float(number) if parameter.grpc_field == "double_param" else value


def infer_request(
    version: ModelVersion, x: Mapping[str, np.ndarray], params: Mapping[str, Any], wanted: list[str]
) -> tuple[PredictionRequest, list[str]]:
    """The data-plane request of an inference call, and the names of the outputs to return.

    ``params`` are already checked (``check_parameter``); ``wanted`` are the output names asked for. Every
    output the model metadata advertises can be asked for by name (``samples`` too, which also turns
    ``return_samples`` on); without named outputs, all but ``samples`` come back (``samples`` too with
    ``return_samples``). ``x``: every input by name.
    """
    abstaining = "abstain_threshold" in params or "abstain_score" in params
    advertised = [name for name, _, _ in output_tensors(version, abstaining)]
    unknown = [name for name in wanted if name not in advertised]
    if unknown:
        raise InvalidArgument(f"Unknown output(s) {unknown}. Expected any of: {', '.join(advertised)}")
    return_samples = bool(params.get("return_samples")) or any(_is_samples(name) for name in wanted)
    single = len(version.inputs) == 1
    decoded = PredictionRequest(
        model=version.name,
        version=version.version,
        x=next(iter(x.values())) if single else None,
        inputs=None if single else dict(x),
        mode=params.get("mode"),
        samples=params.get("mc_samples"),
        seed=params.get("seed"),
        return_samples=return_samples,
        interval=params.get("interval"),
        abstain_threshold=params.get("abstain_threshold"),
        abstain_score=params.get("abstain_score"),
        variant=params.get("variant"),
    )
    return decoded, wanted


def selected_outputs(prediction: Prediction, wanted: list[str]) -> dict[str, np.ndarray]:
    """The arrays to answer with: the ``wanted`` ones, or every one computed (``samples`` only when asked for)."""
    arrays = output_arrays(prediction)
    if not wanted:
        return arrays
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise InvalidArgument(
            f"Output(s) {missing} are not computed for this request (mode {prediction.mode.value.upper()}): "
            "abstain outputs come with a calibrated mode or an abstain_threshold. Expected any of: " + ", ".join(arrays)
        )
    return {name: arrays[name] for name in wanted}


def _is_samples(name: str) -> bool:
    return name == SAMPLES or name.endswith("/" + SAMPLES)


def response_parameters(prediction: Prediction) -> dict[str, int | str | bool | float]:
    """What an inference response echoes: the samples drawn, mode, version, seed, and for regression whether
    the intervals are epistemic only (no observation noise)."""
    parameters: dict[str, int | str | bool | float] = {"mc_samples": prediction.samples, "mode": prediction.mode.value,
                                               "model_version": str(prediction.version)}  # fmt: skip
    if prediction.variant != FLOAT32:  # echoed when a quantised variant answered (float32 answers stay as they were)
        parameters["variant"] = prediction.variant
    if prediction.seed is not None:
        parameters["seed"] = prediction.seed
    for output in prediction.outputs:
        start = prefix(output.name, len(prediction.outputs))
        if output.task == Task.REGRESSION:
            parameters[start + "epistemic_only"] = output.noise_variance is None
        if output.interval_calibration is not None:
            parameters[start + "interval_calibration"] = output.interval_calibration
        if output.decision is not None:
            parameters[start + "abstain_score"] = output.decision.score
            parameters[start + "abstain_threshold"] = output.decision.threshold
    return parameters


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array (FP32, FP64, INT64, …)."""
    return _BY_NUMPY[array.dtype.str.lstrip("<|")]


def parse_version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"Invalid model version {text!r}. Expected a positive integer or empty (latest).")
    return int(text)
