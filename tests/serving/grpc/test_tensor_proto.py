"""``TensorProto`` conversion without TensorFlow, checked against TensorFlow's own ``make_tensor_proto`` and
``make_ndarray`` (mcdrop's message copies and TensorFlow's load side by side: they live in different descriptor
pools)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mcdrop.serving._proto.tensorflow.core.framework import tensor_pb2
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.grpc.tensor_proto import MAX_FILLED_ELEMENTS, from_array, to_array

tf = pytest.importorskip("tensorflow")

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.int8, np.uint8, np.int16, np.uint16, np.bool_, np.float16,
          np.uint32, np.uint64]  # fmt: skip


def ours(official: object) -> object:
    """TensorFlow's message, read as mcdrop's copy (the bytes on the wire)."""
    return tensor_pb2.TensorProto.FromString(official.SerializeToString())  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(DTYPES).flatmap(lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                         max_side=4))))  # fmt: skip
def test_arrays_read_as_tensorflow_writes_them_and_written_as_it_reads_them(array: np.ndarray) -> None:
    official = tf.make_tensor_proto(array)
    read = to_array(ours(official), "x")
    assert read.dtype == array.dtype and read.shape == array.shape
    np.testing.assert_array_equal(read, array)
    written = tf.make_ndarray(type(official).FromString(from_array(array).SerializeToString()))
    assert written.dtype == array.dtype
    np.testing.assert_array_equal(written, array)


@pytest.mark.parametrize(
    ("dtype", "field", "values"),
    [
        (tf.float32, "float_val", [1.5, -2.0, 3.25, 0.0]),
        (tf.float64, "double_val", [1.5, -2.0, 3.25, 0.0]),
        (tf.int32, "int_val", [1, -2, 3, 4]),
        (tf.int64, "int64_val", [1, -2, 3, 2**40]),
        (tf.bool, "bool_val", [True, False, True, True]),
        (tf.float16, "half_val", [1.5, -2.0, 3.25, 0.0]),
        (tf.uint64, "uint64_val", [1, 2, 3, 2**63]),
    ],
)
def test_typed_fields_are_read_like_tensorflow(dtype: object, field: str, values: list[object]) -> None:
    official = tf.make_tensor_proto(values, dtype=dtype, shape=[2, 2])
    official.tensor_content = b""  # typed values only, as other languages' clients send them
    if field == "half_val":
        official.half_val[:] = np.asarray(values, np.float16).view(np.uint16).astype(np.int32).tolist()
    else:
        getattr(official, field)[:] = values
    np.testing.assert_array_equal(to_array(ours(official), "x"), tf.make_ndarray(official))


def test_one_value_fills_the_shape_and_strings_are_bytes() -> None:
    filled = tf.make_tensor_proto(7.0, dtype=tf.float32, shape=[2, 3])
    assert len(filled.float_val) == 1  # TensorFlow's own compact form
    np.testing.assert_array_equal(to_array(ours(filled), "x"), np.full((2, 3), 7.0, np.float32))
    text = to_array(ours(tf.make_tensor_proto("deterministic")), "mode")
    assert text.shape == () and text.item() == b"deterministic"


def test_malformed_tensors_are_refused_with_what_was_expected() -> None:
    short = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
    short.tensor_content = short.tensor_content[:-4]
    huge = tf.make_tensor_proto(1.0, dtype=tf.float32, shape=[MAX_FILLED_ELEMENTS + 1])
    three = tf.make_tensor_proto([1.0, 2.0, 3.0], dtype=tf.float32)
    three.tensor_shape.dim[0].size = 4
    three.tensor_content = b""
    three.float_val[:] = [1.0, 2.0, 3.0]
    unknown = tf.make_tensor_proto(np.zeros(2, np.float32))
    unknown.tensor_shape.unknown_rank = True
    complex_values = tf.make_tensor_proto(np.zeros(2, np.complex64))
    for tensor, words in (
        (short, ["tensor_content", "24 bytes", "Received: 20"]),
        (huge, ["needs 16777217 values", "Received: 1"]),
        (three, ["needs 4 values", "Received: 3"]),
        (unknown, ["unknown_rank"]),
        (complex_values, ["Unsupported dtype DT_COMPLEX64", "DT_FLOAT"]),
    ):
        with pytest.raises(InvalidArgument) as raised:
            to_array(ours(tensor), "x")
        assert all(w in str(raised.value) for w in words), str(raised.value)
