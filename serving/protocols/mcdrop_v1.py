"""The mcdrop.v1 API's messages to and from the prediction core (protobuf only; the servicer is in ``grpc/``).

Both sides of the wire use this module: the server's servicer (``mcdrop.serving.grpc.mcdrop_v1``) encodes
predictions and metadata, the Python client (``mcdrop.serving.client``) decodes them, and the output fields
are named once (``mcdrop.serving.protocols.outputs``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving.core import decision
from mcdrop.serving.core.requests import Mode, OutputPrediction, Prediction, PredictionRequest
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.manifest import FLOAT32, DropoutSite, InputSpec, Task
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import tensors
from mcdrop.serving.protocols.outputs import CLASSIFICATION_OUTPUTS, PER_ROW_OUTPUTS, REGRESSION_OUTPUTS
from mcdrop.serving.protocols.variants import variant_facts

__all__ = ["MODE_ENUMS", "decode_request", "encode_metadata", "encode_prediction"]

MODE_ENUMS = {Mode.DETERMINISTIC: pb.DETERMINISTIC, Mode.MONTE_CARLO: pb.MONTE_CARLO, Mode.MOMENTS: pb.MOMENTS}
_MODES = {pb.MODE_UNSPECIFIED: None, **{enum: mode.value for mode, enum in MODE_ENUMS.items()}}
_DTYPE_ENUMS = {"float32": pb.FLOAT32, "float64": pb.FLOAT64, "int32": pb.INT32, "int64": pb.INT64, "uint8": pb.UINT8}


def decode_request(request: pb.PredictRequest) -> PredictionRequest:
    if request.HasField("input") and request.inputs:
        raise InvalidArgument("Received both `input` and named `inputs`. Expected one of them.")
    named = {name: tensors.decode(tensor, f"inputs[{name!r}]") for name, tensor in request.inputs.items()}
    return PredictionRequest(
        model=request.model,
        x=None if named else tensors.decode(request.input),
        inputs=named or None,
        version=request.version if request.HasField("version") else None,
        mode=_MODES.get(request.mode, str(request.mode)),
        samples=request.samples or None,  # 0 = the model's default
        seed=request.seed if request.HasField("seed") else None,
        return_samples=request.return_samples,
        interval=request.interval if request.HasField("interval") else None,
        tolerance=request.tolerance if request.HasField("tolerance") else None,
        max_samples=request.max_samples,
        chunk=request.chunk,
        abstain_threshold=request.abstain_threshold if request.HasField("abstain_threshold") else None,
        abstain_score=request.abstain_score or None,
        variant=request.variant or None,
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
        variant="" if prediction.variant == FLOAT32 else prediction.variant,  # float32: the bytes of every release
    )
    if prediction.seed is not None:
        response.seed = prediction.seed
    if len(prediction.outputs) == 1:  # the answer every single-output model has always given
        _encode_output(prediction.outputs[0], response)
        return response
    for output in prediction.outputs:
        _encode_output(output, response.outputs.add(name=output.name, task=output.task.value))
    return response


def _encode_output(output: OutputPrediction, message: pb.PredictResponse | pb.OutputResult) -> None:
    """One output's estimate into ``message`` (a response, or one of its ``outputs``)."""
    summary = output.summary
    if isinstance(summary, ClassificationSummary):
        labels = output.class_labels
        # mean and std are tensors ([B, classes]); the per-row outputs are repeated fields (flattened row-major for
        # a dense output, with its pixel_shape)
        pixel_shape = list(summary.predicted_class.shape[1:])
        fields = {name: getattr(summary, name).reshape(-1).tolist() for name in PER_ROW_OUTPUTS}
        fields |= {
            name: tensors.encode(getattr(summary, name)) for name in CLASSIFICATION_OUTPUTS if name not in fields
        }
        decided = output.decision
        abstain: dict[str, Any] = {} if decided is None else {
            "abstain": decided.abstain.reshape(-1).tolist(),
            "abstain_score": decided.score_values.reshape(-1).tolist(),
            "abstain_score_name": decided.score, "abstain_threshold": decided.threshold,
        }  # fmt: skip
        message.classification.CopyFrom(
            pb.Classification(
                predicted_label=[labels[i] for i in summary.predicted_class] if labels and not pixel_shape else [],
                class_labels=labels,
                pixel_shape=pixel_shape,
                **fields,
                **abstain,
            )
        )
    else:
        variance = output.noise_variance
        noise = {} if variance is None else {"noise_variance": tensors.encode(variance.astype(np.float32))}
        arrays = {name: tensors.encode(getattr(summary, name)) for name in REGRESSION_OUTPUTS}
        message.regression.CopyFrom(pb.Regression(interval=summary.level, **arrays, **noise,
                                                  interval_calibration=output.interval_calibration or ""))  # fmt: skip
    if output.sample_outputs is not None:
        message.sample_outputs.CopyFrom(tensors.encode(output.sample_outputs))


def encode_metadata(version: ModelVersion, versions: list[int]) -> pb.ModelMetadata:
    manifest = version.manifest
    source = version.uncertainty_source()
    return pb.ModelMetadata(
        name=version.name,
        version=version.version,
        versions=versions,
        task=version.task.value,
        input=_input_tensor(version.inputs[0]),
        output=pb.TensorSpec(name=manifest.output.name, shape=list(manifest.output.shape), dtype=pb.FLOAT32),
        class_labels=version.class_labels,
        dropout_layers=[_dropout_layer(d) for d in version.dropout],
        default_samples=version.default_samples,
        manifest_json=json.dumps(manifest.to_json()),
        unsampled_dropout_layers=[_dropout_layer(d) for d in version.unsampled_dropout],
        mc_layers=version.mc_layers,
        activation_bytes_per_sample_row=int(source["activation_bytes_per_sample_row"]),
        inputs=[
            pb.InputMetadata(
                tensor=_input_tensor(spec),
                feature_names=list(spec.feature_names or []),
                integer_low=spec.integer_range[0] if spec.integer_range else 0,
                integer_high=spec.integer_range[1] if spec.integer_range else 0,
                has_integer_range=spec.integer_range is not None,
                categories=list(spec.categories or []),
            )
            for spec in version.inputs
        ],
        outputs=[
            pb.OutputMetadata(
                tensor=pb.TensorSpec(name=spec.name, shape=list(spec.shape), dtype=pb.FLOAT32),
                task=spec.task.value,
                class_labels=spec.labels,
                target_names=list(spec.target_names or []),
                epistemic_only=spec.task == Task.REGRESSION and noise is None,
            )
            for spec, noise in zip(version.outputs, version.noise_variances, strict=True)
        ],
        modes=[MODE_ENUMS[Mode(mode)] for mode in version.modes],
        calibration=_calibration_metadata(version),
        variants=[
            pb.VariantMetadata(
                name=f.name, deterministic_bytes=f.deterministic_bytes, float_ops=f.float_ops, agreement=f.agreement
            )
            for f in variant_facts(version)
        ],
    )


def _calibration_metadata(version: ModelVersion) -> dict[str, str]:
    found = decision.metadata(version.manifest)
    return {name: repr(value) if isinstance(value, float) else str(value) for name, value in found.items()}


def _input_tensor(spec: InputSpec) -> pb.TensorSpec:
    return pb.TensorSpec(name=spec.name, shape=list(spec.shape), dtype=_DTYPE_ENUMS.get(spec.dtype, pb.FLOAT32))


def _dropout_layer(site: DropoutSite) -> pb.DropoutLayer:
    return pb.DropoutLayer(name=site.name, layer_class=site.layer_class or "", rate=site.rate,
                           noise_shape=list(site.noise_shape))  # fmt: skip
