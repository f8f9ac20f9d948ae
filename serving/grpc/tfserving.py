"""TensorFlow Serving's gRPC API (``tensorflow.serving.PredictionService`` and ``ModelService``): converts messages and
delegates to the data plane.

What the API says (signatures, output names, controls, status) is in ``mcdrop.serving.protocols.tfserving``, shared
with REST; tensors convert in ``mcdrop.serving.grpc.tensor_proto``. The messages are mcdrop's wire-compatible copies
of TensorFlow Serving's (``protos/tensorflow_serving``); TensorFlow is never imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from google.protobuf import json_format

from mcdrop.serving._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from mcdrop.serving._proto.tensorflow_serving.apis import model_service_pb2_grpc as model_grpc
from mcdrop.serving._proto.tensorflow_serving.apis import prediction_service_pb2_grpc as prediction_grpc
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.grpc.status import deadline_of, request_id_of, translated
from mcdrop.serving.grpc.tensor_proto import from_array, to_array, to_scalar
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import tfserving as protocol
from mcdrop.serving.runtime.dataplane import DataPlane
from mcdrop.serving.runtime.metrics import Metrics

__all__ = ["API", "SERVICE_NAMES", "add_to_server"]

API = "tfserving"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SERVICE_NAMES = (PREDICTION_SERVICE, MODEL_SERVICE)


def resolve(plane: DataPlane, spec: Any) -> ModelVersion:
    """The loaded version a ``ModelSpec`` names: by version, by label, else the latest."""
    if not spec.name:
        raise InvalidArgument("Missing model_spec.name. Expected the name of a served model.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return plane.model(spec.name, spec.version.value)
    if choice == "version_label":
        return plane.labelled(spec.name, spec.version_label)
    return plane.model(spec.name)


def _spec(version: ModelVersion, signature_name: str) -> Any:
    """The answering ``ModelSpec`` (``protocol.model_spec``'s fields, built directly: this runs on every Predict)."""
    spec = model_pb2.ModelSpec(name=version.name, signature_name=signature_name)
    spec.version.value = version.version
    return spec


def make_servicers(plane: DataPlane, metrics: Metrics) -> tuple[Any, Any]:
    unary = translated(API, metrics)

    class PredictionServicer(prediction_grpc.PredictionServiceServicer):  # type: ignore[misc]
        @unary
        def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = resolve(plane, request.model_spec)
            signature = protocol.signature_of(request.model_spec.signature_name)
            inputs = {name: to_scalar(tensor, name) if name in protocol.CONTROLS else to_array(tensor, name)
                      for name, tensor in request.inputs.items()}  # fmt: skip
            decoded, selection = protocol.predict_request(version, signature, inputs, list(request.output_filter),
                                                          default="signature")  # fmt: skip
            decoded = dataclasses.replace(decoded, request_id=request_id_of(context))
            prediction = plane.predict(decoded, deadline_of(context))
            response = predict_pb2.PredictResponse(model_spec=_spec(version, signature))
            for name, array in protocol.answer(version, prediction, selection).items():
                from_array(array, into=response.outputs[name])
            return response

        @unary
        def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
            version = resolve(plane, request.model_spec)
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidArgument(f"Missing metadata_field. Expected [{protocol.SIGNATURE_DEF!r}].")
            unknown = [f for f in fields if f != protocol.SIGNATURE_DEF]
            if unknown:
                raise InvalidArgument(f"Unsupported metadata_field {unknown}. Expected {protocol.SIGNATURE_DEF!r}.")
            signatures = json_format.ParseDict(protocol.signature_def_map(version, plane.default_variant),
                                               get_model_metadata_pb2.SignatureDefMap())  # fmt: skip
            response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_spec(version, ""))
            response.metadata[protocol.SIGNATURE_DEF].Pack(signatures)
            return response

        @unary
        def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
            raise protocol.unimplemented("Classify")

        @unary
        def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
            raise protocol.unimplemented("Regress")

        @unary
        def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
            raise protocol.unimplemented("MultiInference")

    class ModelServicer(model_grpc.ModelServiceServicer):  # type: ignore[misc]
        @unary
        def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
            spec = request.model_spec
            status = plane.model_status(spec.name)
            choice = spec.WhichOneof("version_choice")
            version = None
            if choice == "version":
                version = spec.version.value
            elif choice == "version_label":
                version = plane.version_labels.version(spec.name, spec.version_label)
            entries = protocol.version_status(status.versions, status.failed, version)
            return json_format.ParseDict({"model_version_status": entries},
                                         get_model_status_pb2.GetModelStatusResponse())  # fmt: skip

        @unary
        def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
            raise protocol.unimplemented("HandleReloadConfigRequest")

    return PredictionServicer(), ModelServicer()


def add_to_server(server: Any, plane: DataPlane, metrics: Metrics) -> list[str]:
    """Serve this API on ``server`` (a ``grpc.Server``); its full service names, for reflection and health."""
    prediction, model = make_servicers(plane, metrics)
    prediction_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_grpc.add_ModelServiceServicer_to_server(model, server)
    return list(SERVICE_NAMES)
