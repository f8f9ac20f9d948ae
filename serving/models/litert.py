"""A thin, typed wrapper over one LiteRT interpreter.

Threading: a ``Graph`` wraps one ``ai_edge_litert`` interpreter and is **not
thread-safe**; use one per thread (``mcdrop.serving.models.pool`` keeps a pool of them).

Inputs and outputs are addressed by *logical* names: the converter names a
tensor ``serving_default_x:0`` and we call it ``x``. A full-integer graph with integer inputs and outputs
(``mcdrop export --quantize int8-io``) takes and returns float32 here too: ``run`` quantises each float input with
its tensor's scale and zero point and dequantises each integer output, so every caller sees one float contract.
Tensors are resized and re-allocated only when an input's shape changes, because allocation costs time and, for
fixed-seed random ops, restarts their sequence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from mcdrop.serving.errors import InferenceFailed, InvalidArgument

__all__ = [
    "RANDOM_OPS",
    "VARIABLE_OPS",
    "Graph",
    "Quantization",
    "dequantize",
    "logical_name",
    "quantization_of",
    "quantize",
]

RANDOM_OPS = frozenset({"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"})
VARIABLE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"})

_SIGNATURE_NAME = re.compile(r"^(?:serving_default_)?(?P<name>.+?)(?::\d+)?$")


Quantization = tuple[float, int]
"""An integer tensor's ``(scale, zero_point)``: ``real = scale * (q - zero_point)``."""


def quantization_of(detail: Mapping[str, Any]) -> Quantization | None:
    """The quantization of a tensor (``get_input_details()`` entry) holding quantised reals, or None (a float
    tensor, or an integer one holding plain integers such as a mask or ``samples``)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return None
    return float(scale), int(zero_point)


def logical_name(tensor_name: str) -> str:
    """``serving_default_x:0`` → ``x``."""
    match = _SIGNATURE_NAME.match(tensor_name)
    return match.group("name") if match else tensor_name


class Graph:
    """One LiteRT interpreter over a ``.tflite`` model. Not thread-safe."""

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        num_threads: int = 1,
        delegate: bool = True,
    ) -> None:
        """Args:
        delegate: use LiteRT's default (XNNPACK) delegate; without it every op runs on the builtin kernels and
            reports the shapes of its tensors (a delegated partition does not update its inner shapes).
        """
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._interpreter = Interpreter(
            model_content=content, num_threads=num_threads, experimental_op_resolver_type=resolver
        )
        self._interpreter.allocate_tensors()
        self._inputs = {logical_name(d["name"]): d for d in self._interpreter.get_input_details()}
        outputs = self._interpreter.get_output_details()
        self._outputs = [d["index"] for d in outputs]
        self._output_names = [logical_name(d["name"]) for d in outputs]
        self._shapes: dict[str, tuple[int, ...]] = {
            name: tuple(int(s) for s in d["shape"]) for name, d in self._inputs.items()
        }
        self._input_quantization = {name: q for name, d in self._inputs.items() if (q := quantization_of(d))}
        self._output_quantization = [quantization_of(d) for d in outputs]
        self._quantized_outputs = any(q is not None for q in self._output_quantization)

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        """Names of the output tensors, in the order ``run`` returns them (the export names them after the model's
        outputs, ``y`` for a single one; earlier exports kept the converter's name for a single output)."""
        return list(self._output_names)

    def input_index(self, name: str) -> int:
        """Tensor index of input ``name``."""
        return int(self._inputs[name]["index"])

    def input_spec(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """Shape signature (-1 for dynamic) and dtype of input ``name``."""
        detail = self._inputs[name]
        return tuple(int(s) for s in detail["shape_signature"]), np.dtype(detail["dtype"])

    def input_quantization(self, name: str) -> Quantization | None:
        """``(scale, zero_point)`` of input ``name`` if it takes quantised reals (``run`` quantises float feeds)."""
        return self._input_quantization.get(name)

    def output_quantization(self) -> list[Quantization | None]:
        """``(scale, zero_point)`` of every output that returns quantised reals, in ``run``'s order."""
        return list(self._output_quantization)

    def output_specs(self) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]:
        """Name, shape signature (-1 for dynamic) and dtype of every output, in ``run``'s order."""
        return [(logical_name(d["name"]), tuple(int(s) for s in d["shape_signature"]), np.dtype(d["dtype"]))
                for d in self._interpreter.get_output_details()]  # fmt: skip

    def ops(self) -> list[str]:
        """Builtin op names in execution order (custom and Flex ops keep their custom name)."""
        return [str(op["op_name"]) for op in self.op_details()]

    def float_ops(self) -> list[str]:
        """Ops (sorted, each once) that read or write a float32 tensor, QUANTIZE and DEQUANTIZE aside: in a
        full-integer graph, what still computes in float."""
        dtypes = {int(d["index"]): np.dtype(d["dtype"]) for d in self._interpreter.get_tensor_details()}
        found = set()
        for op in self.op_details():
            name = str(op["op_name"])
            tensors = [int(i) for i in (*op["inputs"], *op["outputs"]) if int(i) >= 0]
            if name not in {"QUANTIZE", "DEQUANTIZE"} and any(dtypes.get(i) == np.float32 for i in tensors):
                found.add(name)
        return sorted(found)

    def op_details(self) -> list[dict[str, Any]]:
        """The graph's own ops; nodes the runtime adds for its default (XNNPACK) delegate are left out."""
        return [op for op in self._interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Feed every input, invoke once, return copies of all outputs.

        Raises:
            InferenceFailed: LiteRT could not allocate or run the graph at these shapes (its own message is often
                empty); the message names the input shapes.
        """
        try:
            self.feed(feeds)
            self._interpreter.invoke()
        except RuntimeError as exc:
            shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feeds.items())
            raise InferenceFailed(
                f"LiteRT failed at inputs {shapes}: {str(exc).strip() or 'RuntimeError without a message'}"
            ) from exc
        if not self._quantized_outputs:  # every float graph: nothing to convert
            return [self._interpreter.get_tensor(index) for index in self._outputs]
        return [
            self._interpreter.get_tensor(index) if q is None else dequantize(self._interpreter.get_tensor(index), q)
            for index, q in zip(self._outputs, self._output_quantization, strict=True)
        ]

    def feed(self, feeds: Mapping[str, np.ndarray]) -> None:
        if feeds.keys() != self._inputs.keys():
            missing = set(self._inputs) - set(feeds)
            unknown = set(feeds) - set(self._inputs)
            raise InvalidArgument(
                f"Graph inputs are {sorted(self._inputs)}. Received: {sorted(feeds)} "
                f"(missing {sorted(missing)}, unknown {sorted(unknown)})"
            )
        resized = False
        for name, value in feeds.items():
            shape = tuple(value.shape)
            if shape != self._shapes[name]:
                self._interpreter.resize_tensor_input(self._inputs[name]["index"], list(shape), strict=True)
                self._shapes[name] = shape
                resized = True
        if resized:
            self._interpreter.allocate_tensors()
        quantized_inputs = self._input_quantization
        for name, value in feeds.items():
            if quantized_inputs and name in quantized_inputs and value.dtype.kind == "f":
                value = quantize(value, quantized_inputs[name], np.dtype(self._inputs[name]["dtype"]))
            self._interpreter.set_tensor(self._inputs[name]["index"], value)

    def tensor_shape(self, index: int) -> tuple[int, ...]:
        """Current shape of tensor ``index`` (for intermediates: without the delegate, after an invoke)."""
        return tuple(int(d) for d in self._interpreter._interpreter.TensorSize(index, 0))


def quantize(value: np.ndarray, quantization: Quantization, dtype: np.dtype[Any]) -> np.ndarray:
    """Reals → the integer tensor's values (rounded to nearest, clipped to the type's range)."""
    scale, zero_point = quantization
    info = np.iinfo(dtype)
    return np.asarray(np.clip(np.rint(value / scale) + zero_point, info.min, info.max), dtype=dtype)


def dequantize(value: np.ndarray, quantization: Quantization) -> np.ndarray:
    """An integer tensor's values → float32 reals."""
    scale, zero_point = quantization
    return ((value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
