"""The Open Inference Protocol (KServe V2) servicer: converts messages and delegates to the data plane.

Inputs come in ``raw_input_contents`` or typed ``contents`` and are checked
strictly (input names, datatype, shape against the metadata, raw byte length).
Outputs go in ``raw_output_contents`` (the Triton client reads only those).
mcdrop's controls travel as request ``parameters``::

    mc_samples (int64)  seed (int64)  mode (string)  return_samples (bool)  interval (double)

Note: the generated ``inference`` protobuf package and ``tritonclient`` both
define ``inference.*`` messages, so they cannot be imported in one process.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np

from mcdrop.serving import __version__
from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc
from mcdrop.serving.core import uncertainty
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.grpc.status import deadline_of, translated
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import tensors as codec
from mcdrop.serving.runtime.dataplane import DataPlane, Prediction, PredictionRequest
from mcdrop.serving.runtime.metrics import Metrics

API = "inference"
SERVICE_NAME = "inference.GRPCInferenceService"
PLATFORM = "litert_mcdropout"

# datatype → (numpy dtype, InferTensorContents field)
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
# name → (InferParameter field, Python type shown in errors)
PARAMETERS = {
    "mc_samples": ("int64_param", "int64"),
    "seed": ("int64_param", "int64"),
    "mode": ("string_param", "string"),
    "return_samples": ("bool_param", "bool"),
    "interval": ("double_param", "double"),
}
IGNORED_PARAMETERS = frozenset({"priority", "timeout"})  # standard scheduling hints; not applicable here
CLASSIFICATION_OUTPUTS = ("mean", "std", "predicted_class", "predictive_entropy", "expected_entropy",
                          "mutual_information", "variation_ratio")  # fmt: skip


def make_servicer(plane: DataPlane, metrics: Metrics) -> Any:
    unary = translated(API, metrics)

    class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        @unary
        def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
            return oip.ServerLiveResponse(live=True)

        @unary
        def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
            return oip.ServerReadyResponse(ready=plane.server_ready())

        @unary
        def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
            return oip.ModelReadyResponse(ready=plane.model_ready(request.name, parse_version(request.version)))

        @unary
        def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
            return oip.ServerMetadataResponse(name="mcdrop", version=__version__, extensions=["mc_dropout"])

        @unary
        def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = plane.model(request.name, parse_version(request.version))
            return model_metadata(version, plane.loaded_versions(version.name))

        @unary
        def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = plane.model(request.model_name, parse_version(request.model_version))
            decoded, wanted = decode_infer_request(request, version)
            prediction = plane.predict(decoded, deadline_of(context))
            return encode_infer_response(request, prediction, wanted)

    return InferenceServicer()


REGRESSION_OUTPUTS = ("predictive_std", "lower", "upper", "mean_lower", "mean_upper")
"""Beside mean and std (epistemic): see ``mcdrop.serving.core.uncertainty`` for each one's meaning."""


def output_tensors(version: ModelVersion) -> list[tuple[str, str, list[int]]]:
    """``(name, datatype, shape)`` of every output the model metadata advertises, in its order."""
    output = [int(d) for d in version.manifest["output"]["shape"]]
    tensors = [("mean", "FP32", output), ("std", "FP32", output)]
    if version.task == "classification":
        tensors += [("predicted_class", "INT64", [-1])]
        tensors += [(name, "FP64", [-1]) for name in CLASSIFICATION_OUTPUTS[3:]]
    else:
        tensors += [(name, "FP32", output) for name in REGRESSION_OUTPUTS]
    if version.stochastic:
        tensors.append(("samples", "FP32", [-1, *output]))
    return tensors


def model_metadata(version: ModelVersion, loaded: list[int]) -> Any:
    return oip.ModelMetadataResponse(
        name=version.name,
        versions=[str(v) for v in loaded],
        platform=PLATFORM,
        inputs=[oip.ModelMetadataResponse.TensorMetadata(name="x", datatype="FP32", shape=list(version.input_shape))],
        outputs=[
            oip.ModelMetadataResponse.TensorMetadata(name=n, datatype=d, shape=s) for n, d, s in output_tensors(version)
        ],
        parameters={name: _parameter(value) for name, value in version.uncertainty_source().items()},
    )


def _parameter(value: str | int) -> Any:
    return oip.InferParameter(string_param=value) if isinstance(value, str) else oip.InferParameter(int64_param=value)


def decode_infer_request(request: Any, version: ModelVersion) -> tuple[PredictionRequest, list[str]]:
    """The data-plane request and the names of the outputs to return.

    Every output the model metadata advertises can be asked for by name (``samples`` too,
    which also turns ``return_samples`` on); without named outputs, all but ``samples``
    come back (``samples`` too with ``return_samples``).
    """
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidArgument(f"Model {version.name!r} takes 1 input named 'x'. Received {len(names)}: {names}")
    tensor = request.inputs[0]
    if tensor.name != "x":
        raise InvalidArgument(f"Unknown input {tensor.name!r}. Expected inputs: 'x'.")
    if tensor.datatype not in DATATYPES:
        raise InvalidArgument(
            f"Invalid datatype {tensor.datatype!r} for input 'x'. Expected one of {', '.join(DATATYPES)}."
        )
    if tensor.datatype != "FP32":
        raise InvalidArgument(f"Invalid datatype for input 'x'. Expected FP32. Received: {tensor.datatype}")
    shape = [int(d) for d in tensor.shape]
    check_input_shape(version, shape)
    x = _tensor_data(request, tensor, shape)
    return infer_request(version, x, _parameters(request), [o.name for o in request.outputs])


def infer_request(
    version: ModelVersion, x: np.ndarray, params: dict[str, Any], wanted: list[str]
) -> tuple[PredictionRequest, list[str]]:
    """The data-plane request for an inference call of either transport (gRPC or REST), and the outputs to return.

    ``params`` are already type-checked (see ``PARAMETERS``); ``wanted`` are the output names asked for.
    """
    advertised = output_names(version)
    unknown = [name for name in wanted if name not in advertised]
    if unknown:
        raise InvalidArgument(f"Unknown output(s) {unknown}. Expected any of: {', '.join(advertised)}")
    return_samples = bool(params.get("return_samples")) or "samples" in wanted
    decoded = PredictionRequest(
        model=version.name,
        version=version.version,
        x=x,
        mode=params.get("mode"),
        samples=params.get("mc_samples"),
        seed=params.get("seed"),
        return_samples=return_samples,
        interval=params.get("interval"),
    )
    return decoded, wanted or [name for name in advertised if name != "samples" or return_samples]


def check_input_shape(version: ModelVersion, shape: list[int]) -> None:
    """``shape`` of input 'x' against the metadata (-1 = any batch size)."""
    codec.check_shape(shape, "input 'x'")
    expected = list(version.input_shape)
    if len(shape) != len(expected) or shape[1:] != expected[1:] or any(d < 0 for d in shape):
        raise InvalidArgument(
            f"Invalid shape for input 'x'. Expected {expected} (-1 = any batch size). Received: {shape}"
        )


def encode_infer_response(request: Any, prediction: Prediction, wanted: list[str]) -> Any:
    response = oip.ModelInferResponse(model_name=prediction.model, model_version=str(prediction.version), id=request.id)
    arrays = output_arrays(prediction)
    for name in wanted:
        array = np.ascontiguousarray(arrays[name])
        datatype = _BY_NUMPY[array.dtype.str.lstrip("<|")]
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    response.parameters["mc_samples"].int64_param = prediction.samples
    response.parameters["mode"].string_param = prediction.mode
    response.parameters["model_version"].string_param = str(prediction.version)
    if prediction.seed is not None:
        response.parameters["seed"].int64_param = prediction.seed
    if isinstance(prediction.summary, uncertainty.RegressionSummary):
        response.parameters["epistemic_only"].bool_param = prediction.noise_variance is None
    return response


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array (FP32, FP64, INT64, …)."""
    return _BY_NUMPY[array.dtype.str.lstrip("<|")]


def output_arrays(prediction: Prediction) -> dict[str, np.ndarray]:
    s = prediction.summary
    arrays: dict[str, np.ndarray] = {"mean": s.mean, "std": s.std}
    if isinstance(s, uncertainty.ClassificationSummary):
        arrays |= {
            "predicted_class": s.predicted_class.astype(np.int64),
            "predictive_entropy": s.predictive_entropy,
            "expected_entropy": s.expected_entropy,
            "mutual_information": s.mutual_information,
            "variation_ratio": s.variation_ratio.astype(np.float64),
        }
    else:
        arrays |= {name: getattr(s, name) for name in REGRESSION_OUTPUTS}
    if prediction.sample_outputs is not None:
        arrays["samples"] = prediction.sample_outputs
    return arrays


def output_names(version: ModelVersion) -> list[str]:
    """The outputs the model metadata advertises, in its order: exactly the ones a request may name."""
    return [name for name, _, _ in output_tensors(version)]


def _tensor_data(request: Any, tensor: Any, shape: list[int]) -> np.ndarray:
    dtype, field = DATATYPES[tensor.datatype]
    count = math.prod(shape)
    typed = getattr(tensor.contents, field) if field else []
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise InvalidArgument(
                f"raw_input_contents holds {len(request.raw_input_contents)} buffers. "
                f"Expected {len(request.inputs)}, one per input."
            )
        if len(typed):
            raise InvalidArgument("Input 'x' has both raw_input_contents and typed contents. Expected only one.")
        raw = request.raw_input_contents[0]
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidArgument(
                f"Invalid raw_input_contents length for input 'x'. Expected {expected} bytes "
                f"({' x '.join(map(str, shape))} x {dtype.itemsize} bytes of {tensor.datatype}). "
                f"Received: {len(raw)} bytes"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if len(typed) != count:
        raise InvalidArgument(
            f"Invalid contents for input 'x'. Expected {count} values in contents.{field} for shape {shape}. "
            f"Received: {len(typed)}"
        )
    return np.asarray(typed, dtype=dtype).reshape(shape)


def _parameters(request: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, parameter in request.parameters.items():
        if name in IGNORED_PARAMETERS:
            continue
        if name not in PARAMETERS:
            raise InvalidArgument(f"Unknown parameter {name!r}. Expected any of: {', '.join(PARAMETERS)}")
        field, kind = PARAMETERS[name]
        received = parameter.WhichOneof("parameter_choice")
        if received != field:
            raise InvalidArgument(
                f"Invalid type for parameter {name!r}. Expected {kind} ({field}). Received: {received}"
            )
        values[name] = getattr(parameter, field)
    return values


def parse_version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument(f"Invalid model version {text!r}. Expected a positive integer or empty (latest).")
    return int(text)
