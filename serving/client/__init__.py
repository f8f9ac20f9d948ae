"""The Python clients: the mcdrop gRPC API (``mcdrop.serving.client._grpc``) and the Open Inference Protocol over
REST (``mcdrop.serving.client._rest``), both answering with ``Prediction``."""

from __future__ import annotations

from mcdrop.serving.client._grpc import Client, ModelStatus, Prediction, decode_prediction, serialized_request
from mcdrop.serving.client._rest import RestClient
from mcdrop.serving.errors import RpcFailed

__all__ = ["Client", "ModelStatus", "Prediction", "RestClient", "RpcFailed", "decode_prediction", "serialized_request"]
