"""The descriptor pool server reflection answers from: every service the server runs, in one pool.

The Open Inference Protocol's and TensorFlow Serving's messages live in a pool of their own (``protos/generate.py``:
other libraries define the same names), mcdrop.v1, health and reflection in protobuf's default pool; reflection
reads one pool, so it gets a merged copy of all of them.
"""

from __future__ import annotations

import functools
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from mcdrop.serving._proto._pool import merged_pool
from mcdrop.serving._proto.inference import grpc_service_pb2
from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2
from mcdrop.serving._proto.tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

__all__ = ["reflection_pool"]


@functools.cache
def reflection_pool() -> Any:
    """A pool holding every served service's file and what it imports."""
    files = (mcdrop_pb2, grpc_service_pb2, prediction_service_pb2, model_service_pb2, health_pb2, reflection_pb2)
    return merged_pool([module.DESCRIPTOR for module in files])
