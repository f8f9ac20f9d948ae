"""The mcdrop.v1 API's messages to and from the prediction core (protobuf only; the servicer is in ``grpc/``).

Both sides of the wire use this module: the server's servicer (``mcdrop.serving.grpc.mcdrop_v1``) encodes
predictions and metadata, the Python client (``mcdrop.serving.client``) decodes them, and the output fields
are named once (``mcdrop.serving.protocols.outputs``).
"""

from __future__ import annotations

import json

import numpy as np

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving.core.requests import Mode, Prediction, PredictionRequest
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.models.manifest import DropoutSite
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import tensors
from mcdrop.serving.protocols.outputs import CLASSIFICATION_OUTPUTS, PER_ROW_OUTPUTS, REGRESSION_OUTPUTS

__all__ = ["MODE_ENUMS", "decode_request", "encode_metadata", "encode_prediction"]

MODE_ENUMS = {Mode.DETERMINISTIC: pb.DETERMINISTIC, Mode.MONTE_CARLO: pb.MONTE_CARLO}
_MODES = {pb.MODE_UNSPECIFIED: None, pb.DETERMINISTIC: Mode.DETERMINISTIC.value, pb.MONTE_CARLO: Mode.MONTE_CARLO.value}
_DTYPE_ENUMS = {"float32": pb.FLOAT32, "float64": pb.FLOAT64, "int32": pb.INT32, "int64": pb.INT64, "uint8": pb.UINT8}


def decode_request(request: pb.PredictRequest) -> PredictionRequest:
    return PredictionRequest(
        model=request.model,
        x=tensors.decode(request.input),
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
        mode=MODE_ENUMS[prediction.mode],
        samples=prediction.samples,
        final=prediction.final,
        max_standard_error=prediction.max_standard_error,
        queue_ms=prediction.queue_ms,
        compute_ms=prediction.compute_ms,
    )
    if prediction.seed is not None:
        response.seed = prediction.seed
    summary = prediction.summary
    if isinstance(summary, ClassificationSummary):
        labels = prediction.class_labels
        # mean and std are tensors ([B, classes]); the per-row outputs are repeated fields
        fields = {name: getattr(summary, name).tolist() for name in PER_ROW_OUTPUTS}
        fields |= {
            name: tensors.encode(getattr(summary, name)) for name in CLASSIFICATION_OUTPUTS if name not in fields
        }
        response.classification.CopyFrom(
            pb.Classification(
                predicted_label=[labels[i] for i in summary.predicted_class] if labels else [],
                class_labels=labels,
                **fields,
            )
        )
    else:
        variance = prediction.noise_variance
        noise = {} if variance is None else {"noise_variance": tensors.encode(variance.astype(np.float32))}
        outputs = {name: tensors.encode(getattr(summary, name)) for name in REGRESSION_OUTPUTS}
        response.regression.CopyFrom(pb.Regression(interval=summary.level, **outputs, **noise))
    if prediction.sample_outputs is not None:
        response.sample_outputs.CopyFrom(tensors.encode(prediction.sample_outputs))
    return response


def encode_metadata(version: ModelVersion, versions: list[int]) -> pb.ModelMetadata:
    manifest = version.manifest
    source = version.uncertainty_source()
    return pb.ModelMetadata(
        name=version.name,
        version=version.version,
        versions=versions,
        task=version.task.value,
        input=pb.TensorSpec(
            name="x", shape=list(version.input_shape), dtype=_DTYPE_ENUMS.get(version.input_dtype, pb.FLOAT32)
        ),
        output=pb.TensorSpec(name="y", shape=list(manifest.output.shape), dtype=pb.FLOAT32),
        class_labels=version.class_labels,
        dropout_layers=[_dropout_layer(d) for d in version.dropout],
        default_samples=version.default_samples,
        manifest_json=json.dumps(manifest.to_json()),
        unsampled_dropout_layers=[_dropout_layer(d) for d in version.unsampled_dropout],
        mc_layers=version.mc_layers,
        activation_bytes_per_sample_row=int(source["activation_bytes_per_sample_row"]),
    )


def _dropout_layer(site: DropoutSite) -> pb.DropoutLayer:
    return pb.DropoutLayer(name=site.name, layer_class=site.layer_class or "", rate=site.rate,
                           noise_shape=list(site.noise_shape))  # fmt: skip
