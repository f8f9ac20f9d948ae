"""TensorFlow's ``TensorProto`` to and from numpy, without TensorFlow.

Read: ``tensor_content`` (raw little-endian bytes, what ``tf.make_tensor_proto`` sends for numpy arrays) or the typed
repeated field of the dtype (``float_val``, ``int64_val``, ``string_val``, …), where one value fills the whole shape
(as in TensorFlow). Written: ``tensor_content`` for numbers and booleans, which ``tf.make_ndarray`` reads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mcdrop.serving._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from mcdrop.serving.errors import InvalidArgument

__all__ = ["MAX_FILLED_ELEMENTS", "from_array", "to_array", "to_scalar"]

_NUMPY: dict[Any, tuple[str, str]] = {
    types_pb2.DT_FLOAT: ("<f4", "float_val"),
    types_pb2.DT_DOUBLE: ("<f8", "double_val"),
    types_pb2.DT_INT32: ("<i4", "int_val"),
    types_pb2.DT_UINT8: ("u1", "int_val"),
    types_pb2.DT_INT16: ("<i2", "int_val"),
    types_pb2.DT_INT8: ("i1", "int_val"),
    types_pb2.DT_UINT16: ("<u2", "int_val"),
    types_pb2.DT_INT64: ("<i8", "int64_val"),
    types_pb2.DT_BOOL: ("?", "bool_val"),
    types_pb2.DT_HALF: ("<f2", "half_val"),
    types_pb2.DT_UINT32: ("<u4", "uint32_val"),
    types_pb2.DT_UINT64: ("<u8", "uint64_val"),
}
"""dtype → (numpy dtype, typed field). ``DT_STRING`` is read from ``string_val`` only."""
_DTYPE_OF_NUMPY = {np.dtype(code).str.lstrip("<|"): dtype for dtype, (code, _) in _NUMPY.items()}
MAX_FILLED_ELEMENTS = 1 << 24
"""The most elements one typed value may fill (64 MiB of float32): a tiny message must not allocate without bound."""


def to_array(tensor: Any, name: str) -> np.ndarray:
    """The numpy array of a ``TensorProto`` (strings: an object array of ``bytes``).

    Raises:
        InvalidArgument: an unsupported dtype, an unknown rank, or values that do not fill the shape.
    """
    which = f"input {name!r}"
    if tensor.tensor_shape.unknown_rank:
        raise InvalidArgument(f"Invalid tensor_shape of {which}: unknown_rank. Expected its dimensions.")
    shape = [d.size for d in tensor.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"Invalid tensor_shape of {which}. Expected sizes >= 0. Received: {shape}")
    count = math.prod(shape)
    if tensor.dtype == types_pb2.DT_STRING:
        return _filled(np.array(list(tensor.string_val), dtype=object), shape, count, which, "string_val")
    known = _NUMPY.get(tensor.dtype)
    if known is None:
        expected = ", ".join(_dtype_name(d) for d in (*_NUMPY, types_pb2.DT_STRING))
        raise InvalidArgument(f"Unsupported dtype {_dtype_name(tensor.dtype)} of {which}. Expected one of {expected}.")
    code, field = known
    dtype = np.dtype(code)
    raw = tensor.tensor_content
    if raw:
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgument(
                f"Invalid tensor_content of {which}: shape {shape} of {_dtype_name(tensor.dtype)} is "
                f"{count * dtype.itemsize} bytes. Received: {len(raw)} bytes"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    values = getattr(tensor, field)
    if tensor.dtype == types_pb2.DT_HALF:  # half_val holds the 16-bit patterns
        typed = np.asarray(values, dtype=np.int32).astype(np.uint16).view(np.float16)
    else:
        typed = np.asarray(values, dtype=dtype)
    return _filled(typed, shape, count, which, field)


def to_scalar(tensor: Any, name: str) -> Any:
    """A one-value tensor's Python value (``bytes`` for a string), read without numpy: the Monte-Carlo controls of
    every Predict. Anything else is ``to_array``'s."""
    field = "string_val" if tensor.dtype == types_pb2.DT_STRING else _NUMPY.get(tensor.dtype, ("", ""))[1]
    if (
        field
        and field != "half_val"
        and not tensor.tensor_content
        and all(d.size == 1 for d in tensor.tensor_shape.dim)
    ):
        values = getattr(tensor, field)
        if len(values) == 1:
            return values[0]
    return to_array(tensor, name)


def _dtype_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else f"dtype {dtype}"


def _filled(values: np.ndarray, shape: list[int], count: int, which: str, field: str) -> np.ndarray:
    if len(values) == count:
        return values.reshape(shape)
    if len(values) == 1 and count <= MAX_FILLED_ELEMENTS:
        return np.full(shape, values[0], dtype=values.dtype)
    raise InvalidArgument(
        f"Invalid {field} of {which}: shape {shape} needs {count} values (or one to fill it). Received: {len(values)}"
    )


def from_array(array: np.ndarray, into: Any | None = None) -> Any:
    """A ``TensorProto`` of a numeric or boolean array, in ``tensor_content``; written ``into`` an (empty) message
    in place when given (a response's map entry: no copy)."""
    proto = tensor_pb2.TensorProto() if into is None else into
    proto.dtype = _DTYPE_OF_NUMPY[array.dtype.str.lstrip("<|")]
    proto.tensor_content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    return proto
