"""The Open Inference Protocol (KServe V2) gRPC servicer: converts messages and delegates to the data plane.

What the protocol says (metadata, input, outputs, parameters) is in ``mcdrop.serving.protocols.oip``,
shared with REST. Here: inputs come in ``raw_input_contents`` or typed ``contents`` and are checked
strictly (count, raw byte length); outputs go in ``raw_output_contents`` (the Triton client reads only
those).

The generated ``inference`` messages live in a descriptor pool of their own (``protos/generate.py``), so they load
beside ``tritonclient``'s definitions of the same messages.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.inference import grpc_service_pb2_grpc as oip_grpc
from mcdrop.serving._proto.inference import model_config_pb2
from mcdrop.serving.core.requests import Prediction, PredictionRequest
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.grpc.status import deadline_of, request_id_of, translated
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import oip as protocol
from mcdrop.serving.runtime.dataplane import DataPlane
from mcdrop.serving.runtime.metrics import Metrics

__all__ = ["API", "SERVICE_NAME", "add_to_server", "make_servicer"]

API = "inference"
SERVICE_NAME = "inference.GRPCInferenceService"


def make_servicer(plane: DataPlane, metrics: Metrics) -> Any:
    unary = translated(API, metrics)
    parse_version = protocol.parse_version

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
            return oip.ServerMetadataResponse(**protocol.server_metadata())

        @unary
        def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = plane.model(request.name, parse_version(request.version))
            return model_metadata(version, plane.loaded_versions(version.name))

        @unary
        def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = plane.model(request.name, parse_version(request.version))
            config = protocol.model_config(version, plane.loaded_versions(version.name), plane.limits.max_batch or 0)
            return oip.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

        @unary
        def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = plane.model(request.model_name, parse_version(request.model_version))
            decoded, wanted = decode_infer_request(request, version)
            decoded = dataclasses.replace(decoded, request_id=request.id or request_id_of(context))
            prediction = plane.predict(decoded, deadline_of(context))
            return encode_infer_response(request, prediction, wanted)

    return InferenceServicer()


def model_metadata(version: ModelVersion, loaded: list[int]) -> Any:
    metadata = protocol.model_metadata(version, loaded)
    tensor = oip.ModelMetadataResponse.TensorMetadata
    return oip.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensor(**spec) for spec in metadata["inputs"]],
        outputs=[tensor(**spec) for spec in metadata["outputs"]],
        parameters={name: _parameter(value) for name, value in metadata["parameters"].items()},
    )


def _parameter(value: str | int | bool | float) -> Any:
    if isinstance(value, bool):
        return oip.InferParameter(bool_param=value)
    if isinstance(value, float):
        return oip.InferParameter(double_param=value)
    return oip.InferParameter(string_param=value) if isinstance(value, str) else oip.InferParameter(int64_param=value)


def decode_infer_request(request: Any, version: ModelVersion) -> tuple[PredictionRequest, list[str]]:
    """The data-plane request and the names of the outputs to return (see ``protocols.oip.infer_request``)."""
    protocol.check_inputs(version, [i.name for i in request.inputs])
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents holds {len(request.raw_input_contents)} buffers. "
            f"Expected {len(request.inputs)}, one per input."
        )
    x: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        shape = [int(d) for d in tensor.shape]
        protocol.check_input(version, tensor.name, tensor.datatype, shape)
        x[tensor.name] = _tensor_data(request, index, tensor, shape)
    params: dict[str, Any] = {}
    for name, parameter in request.parameters.items():
        field = parameter.WhichOneof("parameter_choice")
        value = protocol.check_parameter(name, getattr(parameter, field) if field else None, str(field))
        if value is not None:
            params[name] = value
    return protocol.infer_request(version, x, params, [o.name for o in request.outputs])


def encode_infer_response(request: Any, prediction: Prediction, wanted: list[str]) -> Any:
    response = oip.ModelInferResponse(model_name=prediction.model, model_version=str(prediction.version), id=request.id)
    for name, selected in protocol.selected_outputs(prediction, wanted).items():
        array = np.ascontiguousarray(selected)
        response.outputs.add(name=name, datatype=protocol.datatype_of(array), shape=list(array.shape))
        response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    for name, value in protocol.response_parameters(prediction).items():
        response.parameters[name].CopyFrom(_parameter(value))
    return response


def _tensor_data(request: Any, index: int, tensor: Any, shape: list[int]) -> np.ndarray:
    dtype, field = protocol.DATATYPES[tensor.datatype]
    count = math.prod(shape)
    typed = getattr(tensor.contents, field) if field else []
    which = f"input {tensor.name!r}"
    if request.raw_input_contents:
        if len(typed):
            raise InvalidArgument(f"Input {tensor.name!r} has both raw_input_contents and typed contents. "
                                  "Expected only one.")  # fmt: skip
        raw = request.raw_input_contents[index]
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidArgument(
                f"Invalid raw_input_contents length for {which}. Expected {expected} bytes "
                f"({' x '.join(map(str, shape))} x {dtype.itemsize} bytes of {tensor.datatype}). "
                f"Received: {len(raw)} bytes"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if len(typed) != count:
        raise InvalidArgument(
            f"Invalid contents for {which}. Expected {count} values in contents.{field} for shape {shape}. "
            f"Received: {len(typed)}"
        )
    return np.asarray(typed, dtype=dtype).reshape(shape)


def add_to_server(server: Any, plane: DataPlane, metrics: Metrics) -> str:
    """Serve this API on ``server`` (a ``grpc.Server``); its full service name, for reflection."""
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(make_servicer(plane, metrics), server)
    return SERVICE_NAME
