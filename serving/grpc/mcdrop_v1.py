"""The ``mcdrop.v1.Inference`` servicer: converts messages and delegates to the data plane."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import numpy as np

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2_grpc as pb_grpc
from mcdrop.serving.core import uncertainty
from mcdrop.serving.grpc.status import deadline_of, translated
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import tensors as codec
from mcdrop.serving.runtime.dataplane import DETERMINISTIC, MONTE_CARLO, DataPlane, Prediction, PredictionRequest
from mcdrop.serving.runtime.metrics import Metrics

API = "mcdrop.v1"
SERVICE_NAME = "mcdrop.v1.Inference"
_MODES = {pb.MODE_UNSPECIFIED: None, pb.DETERMINISTIC: DETERMINISTIC, pb.MONTE_CARLO: MONTE_CARLO}
_MODE_ENUMS = {DETERMINISTIC: pb.DETERMINISTIC, MONTE_CARLO: pb.MONTE_CARLO}
_DTYPE_ENUMS = {"float32": pb.FLOAT32, "float64": pb.FLOAT64, "int32": pb.INT32, "int64": pb.INT64, "uint8": pb.UINT8}


def make_servicer(plane: DataPlane, metrics: Metrics) -> pb_grpc.InferenceServicer:
    rpc = translated(API, metrics)

    class InferenceServicer(pb_grpc.InferenceServicer):  # type: ignore[misc]
        @rpc
        def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
            return encode_prediction(plane.predict(decode_request(request), deadline_of(context)))

        @rpc
        def PredictStream(
            self, request: pb.PredictRequest, context: grpc.ServicerContext
        ) -> Iterator[pb.PredictResponse]:
            for prediction in plane.predict_stream(decode_request(request), deadline_of(context)):
                yield encode_prediction(prediction)

        @rpc
        def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
            return pb.ListModelsResponse(
                models=[
                    pb.ModelStatus(
                        name=status.name,
                        versions=status.versions,
                        latest=status.latest.version if status.latest else 0,
                        task=status.latest.task if status.latest else "",
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


def decode_request(request: pb.PredictRequest) -> PredictionRequest:
    return PredictionRequest(
        model=request.model,
        x=codec.decode(request.input),
        version=request.version if request.HasField("version") else None,
        mode=_MODES.get(request.mode, str(request.mode)),
        samples=request.samples or None,  # 0 = the model's default
        seed=request.seed if request.HasField("seed") else None,
        return_samples=request.return_samples,
        interval=request.interval if request.HasField("interval") else None,
        tolerance=request.tolerance if request.HasField("tolerance") else None,
        max_samples=request.max_samples,
        chunk=request.chunk,
    )


def encode_prediction(prediction: Prediction) -> pb.PredictResponse:
    response = pb.PredictResponse(
        model=prediction.model,
        version=prediction.version,
        mode=_MODE_ENUMS[prediction.mode],
        samples=prediction.samples,
        final=prediction.final,
        max_standard_error=prediction.max_standard_error,
        queue_ms=prediction.queue_ms,
        compute_ms=prediction.compute_ms,
    )
    if prediction.seed is not None:
        response.seed = prediction.seed
    summary = prediction.summary
    if isinstance(summary, uncertainty.ClassificationSummary):
        labels = prediction.class_labels
        response.classification.CopyFrom(
            pb.Classification(
                mean=codec.encode(summary.mean),
                std=codec.encode(summary.std),
                predicted_class=summary.predicted_class.tolist(),
                predicted_label=[labels[i] for i in summary.predicted_class] if labels else [],
                predictive_entropy=summary.predictive_entropy.tolist(),
                expected_entropy=summary.expected_entropy.tolist(),
                mutual_information=summary.mutual_information.tolist(),
                variation_ratio=summary.variation_ratio.tolist(),
                class_labels=labels,
            )
        )
    else:
        variance = prediction.noise_variance
        noise = {} if variance is None else {"noise_variance": codec.encode(variance.astype(np.float32))}
        response.regression.CopyFrom(
            pb.Regression(
                mean=codec.encode(summary.mean),
                std=codec.encode(summary.std),
                lower=codec.encode(summary.lower),
                upper=codec.encode(summary.upper),
                interval=summary.level,
                predictive_std=codec.encode(summary.predictive_std),
                mean_lower=codec.encode(summary.mean_lower),
                mean_upper=codec.encode(summary.mean_upper),
                **noise,
            )
        )
    if prediction.sample_outputs is not None:
        response.sample_outputs.CopyFrom(codec.encode(prediction.sample_outputs))
    return response


def encode_metadata(version: ModelVersion, versions: list[int]) -> pb.ModelMetadata:
    manifest = version.manifest
    return pb.ModelMetadata(
        name=version.name,
        version=version.version,
        versions=versions,
        task=version.task,
        input=pb.TensorSpec(
            name="x", shape=list(version.input_shape), dtype=_DTYPE_ENUMS.get(version.input_dtype, pb.FLOAT32)
        ),
        output=pb.TensorSpec(name="y", shape=list(manifest["output"]["shape"]), dtype=pb.FLOAT32),
        class_labels=version.class_labels,
        dropout_layers=[
            pb.DropoutLayer(name=d["name"], layer_class=d["class"], rate=d["rate"], noise_shape=d["noise_shape"])
            for d in manifest["dropout_layers"]
        ],
        default_samples=version.default_samples,
        manifest_json=json.dumps(manifest),
        unsampled_dropout_layers=[
            pb.DropoutLayer(name=d["name"], layer_class=d["class"], rate=d["rate"], noise_shape=d["noise_shape"])
            for d in version.unsampled_dropout
        ],
        mc_layers=version.mc_layers,
        activation_bytes_per_sample_row=version.uncertainty_source()["activation_bytes_per_sample_row"],
    )
