"""Tensors of the mcdrop API (``mcdrop.v1.Tensor``) to and from numpy, with strict checks."""

from __future__ import annotations

import math

import numpy as np

from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
from mcdrop.serving.errors import InvalidArgument

__all__ = ["check_shape", "decode", "encode"]

DTYPES: dict[int, np.dtype[np.generic]] = {
    pb.FLOAT32: np.dtype("<f4"),
    pb.FLOAT64: np.dtype("<f8"),
    pb.INT32: np.dtype("<i4"),
    pb.INT64: np.dtype("<i8"),
    pb.UINT8: np.dtype("u1"),
}
_ENUMS = {dtype.kind + str(dtype.itemsize): enum for enum, dtype in DTYPES.items()}
MAX_RANK = 8
MAX_DIMENSION = 2**31 - 1


def decode(tensor: pb.Tensor, what: str = "input") -> np.ndarray:
    """A numpy view of ``tensor``'s bytes, after checking dtype, shape and byte length."""
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidArgument(
            f"Invalid {what} dtype. Expected one of {', '.join(pb.DataType.Name(d) for d in DTYPES)}. "
            f"Received: {pb.DataType.Name(tensor.dtype) if tensor.dtype in pb.DataType.values() else tensor.dtype}"
        )
    shape = list(tensor.shape)
    check_shape(shape, what)
    expected = math.prod(shape) * dtype.itemsize  # exact Python ints: no overflow on hostile shapes
    if len(tensor.data) != expected:
        raise InvalidArgument(
            f"Invalid {what} byte length. Expected {expected} bytes (shape {shape} x {dtype.itemsize} bytes of "
            f"{pb.DataType.Name(tensor.dtype)}). Received: {len(tensor.data)} bytes"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def check_shape(shape: list[int], what: str) -> None:
    """Rank 1..MAX_RANK, every dimension in [0, MAX_DIMENSION]."""
    if not 1 <= len(shape) <= MAX_RANK or any(not 0 <= d <= MAX_DIMENSION for d in shape):
        raise InvalidArgument(
            f"Invalid {what} shape. Expected 1 to {MAX_RANK} dimensions, each in [0, {MAX_DIMENSION}]. "
            f"Received: {shape[: MAX_RANK + 1]}{' ...' if len(shape) > MAX_RANK + 1 else ''}"
        )


def encode(array: np.ndarray) -> pb.Tensor:
    """``array`` as a little-endian, row-major ``Tensor``."""
    array = np.asarray(array)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    key = array.dtype.kind + str(array.dtype.itemsize)
    if key not in _ENUMS:
        raise TypeError(f"Cannot encode dtype {array.dtype}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    data = np.ascontiguousarray(little).tobytes()
    return pb.Tensor(shape=list(array.shape), dtype=_ENUMS[key], data=data)  # type: ignore[arg-type]
