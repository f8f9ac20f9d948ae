"""Wire bytes of the other APIs' requests, for load generators that send them as they are (``mcdrop bench``): the
Open Inference Protocol's ``ModelInfer`` and TensorFlow Serving's ``Predict``, built from mcdrop's copies of their
messages (so the bench needs neither tritonclient nor TensorFlow Serving's package)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mcdrop.serving._proto.inference import grpc_service_pb2 as oip
from mcdrop.serving._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from mcdrop.serving._proto.tensorflow_serving.apis import predict_pb2

__all__ = ["OIP_INFER", "TFSERVING_PREDICT", "oip_infer_request", "tfserving_predict_request"]

OIP_INFER = "/inference.GRPCInferenceService/ModelInfer"
TFSERVING_PREDICT = "/tensorflow.serving.PredictionService/Predict"


def oip_infer_request(model: str, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, int | str | bool | float],
                      outputs: Sequence[str] = ()) -> bytes:  # fmt: skip
    """A ``ModelInfer`` with FP32 inputs in ``raw_input_contents`` (as Triton's clients send them), the parameters,
    and the outputs asked for by name (none: all but ``samples``)."""
    request = oip.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
    for name, value in parameters.items():
        field = {bool: "bool_param", int: "int64_param", float: "double_param", str: "string_param"}[type(value)]
        setattr(request.parameters[name], field, value)
    for name in outputs:
        request.outputs.add(name=name)
    return bytes(request.SerializeToString())


def tfserving_predict_request(model: str, inputs: Mapping[str, np.ndarray], controls: Mapping[str, int | str],
                              output_filter: Sequence[str] = ()) -> bytes:  # fmt: skip
    """A ``Predict`` with float32 inputs in ``tensor_content`` (as ``tf.make_tensor_proto`` sends them) and the
    controls as scalars (int64 or string)."""
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = model
    for name, array in inputs.items():
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                                        tensor_content=np.ascontiguousarray(array, dtype="<f4").tobytes())  # fmt: skip
        tensor.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
        request.inputs[name].CopyFrom(tensor)
    for name, value in controls.items():
        if isinstance(value, str):
            request.inputs[name].CopyFrom(
                tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[value.encode()])
            )
        else:
            request.inputs[name].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[value]))
    return bytes(request.SerializeToString())
