"""The ``mcdrop.v1.Inference`` servicer: converts messages (``mcdrop.serving.protocols.mcdrop_v1``) and delegates
to the data plane."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import grpc

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.grpc.status import deadline_of, request_id_of, translated
from mcdrop.serving.protocols.mcdrop_v1 import decode_request, encode_metadata, encode_prediction
from mcdrop.serving.runtime.dataplane import DataPlane
from mcdrop.serving.runtime.metrics import Metrics

__all__ = ["API", "SERVICE_NAME", "add_to_server", "make_servicer"]

API = "mcdrop.v1"
SERVICE_NAME = "mcdrop.v1.Inference"


def make_servicer(plane: DataPlane, metrics: Metrics) -> pb_grpc.InferenceServicer:
    rpc = translated(API, metrics)

    class InferenceServicer(pb_grpc.InferenceServicer):  # type: ignore[misc]
        @rpc
        def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
            decoded = dataclasses.replace(decode_request(request), request_id=request_id_of(context))
            return encode_prediction(plane.predict(decoded, deadline_of(context)))

        @rpc
        def PredictStream(
            self, request: pb.PredictRequest, context: grpc.ServicerContext
        ) -> Iterator[pb.PredictResponse]:
            decoded = dataclasses.replace(decode_request(request), request_id=request_id_of(context))
            for prediction in plane.predict_stream(decoded, deadline_of(context)):
                yield encode_prediction(prediction)

        @rpc
        def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
            return pb.ListModelsResponse(
                models=[
                    pb.ModelStatus(
                        name=status.name,
                        versions=status.versions,
                        latest=status.latest.version if status.latest else 0,
                        task=",".join(dict.fromkeys(o.task.value for o in status.latest.outputs))
                        if status.latest
                        else "",
                        failed_versions=status.failed,
                    )
                    for status in plane.list_models()
                ]
            )

        @rpc
        def GetModelMetadata(
            self, request: pb.GetModelMetadataRequest, context: grpc.ServicerContext
        ) -> pb.ModelMetadata:
            version = plane.model(request.model, request.version if request.HasField("version") else None)
            return encode_metadata(version, plane.loaded_versions(version.name))

    return InferenceServicer()


def add_to_server(server: Any, plane: DataPlane, metrics: Metrics) -> str:
    """Serve this API on ``server`` (a ``grpc.Server``); its full service name, for reflection."""
    pb_grpc.add_InferenceServicer_to_server(make_servicer(plane, metrics), server)
    return SERVICE_NAME
