"""The Python client of the mcdrop gRPC API (see ``mcdrop.serving.client._grpc``)."""

from __future__ import annotations

from mcdrop.serving.client._grpc import Client, ModelStatus, Prediction, decode_prediction
from mcdrop.serving.errors import RpcFailed

__all__ = ["Client", "ModelStatus", "Prediction", "RpcFailed", "decode_prediction"]
