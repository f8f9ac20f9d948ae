"""The committed generated code is exactly what protos/generate.py produces from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    committed = REPO / "serving" / "_proto"
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    current = {
        p.relative_to(committed): p.read_bytes()
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(current)
    stale = [str(name) for name in fresh if fresh[name] != current[name]]
    assert not stale, f"regenerate with: python protos/generate.py ({stale})"


def _fields(message: object) -> dict[str, tuple[int, int, bool, str]]:
    """A message's fields by name: number, wire type, repeated, and the full name of its message or enum type."""
    found = {}
    for field in message.fields:  # type: ignore[attr-defined]
        kind = field.message_type or field.enum_type
        found[field.name] = (field.number, field.type, field.is_repeated, kind.full_name if kind
                             else "")  # fmt: skip
    return found


def _messages(file: object) -> list[object]:
    pending, found = list(file.message_types_by_name.values()), []  # type: ignore[attr-defined]
    while pending:
        message = pending.pop()
        found.append(message)
        pending += list(message.nested_types)  # type: ignore[attr-defined]
    return found


def test_tensorflow_serving_and_triton_copies_are_wire_compatible_with_the_official_definitions() -> None:
    """Every field of mcdrop's copies of TensorFlow Serving's and Triton's messages has the number, type and label of
    the official field of that name (the official packages load beside them: mcdrop's live in their own pool), every
    enum value its number, and every service method its message types."""
    pytest.importorskip("tensorflow")
    from google.protobuf import descriptor_pool
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
    from tritonclient.grpc import service_pb2

    import mcdrop.serving._proto.inference.grpc_service_pb2 as our_inference
    import mcdrop.serving._proto.tensorflow_serving.apis.model_service_pb2 as our_model_service
    import mcdrop.serving._proto.tensorflow_serving.apis.prediction_service_pb2 as our_prediction_service

    official = descriptor_pool.Default()
    assert all((prediction_service_pb2, model_service_pb2, service_pb2))  # loaded into the default pool
    checked, differences = 0, []
    pending = [module.DESCRIPTOR for module in (our_prediction_service, our_model_service, our_inference)]
    seen: set[str] = set()
    while pending:
        file = pending.pop()
        if file.name in seen or file.package.startswith("google.protobuf"):
            continue
        seen.add(file.name)
        pending += list(file.dependencies)
        for message in _messages(file):
            if message.full_name == PARAMETERS[3]:  # the map entry of mcdrop's one added field (below)
                continue
            theirs = _fields(official.FindMessageTypeByName(message.full_name))
            for name, field in _fields(message).items():
                if theirs.get(name) != field:
                    differences.append(f"{message.full_name}.{name}: ours {field}, official {theirs.get(name)}")
                checked += 1
            for enum in message.enum_types:
                assert {v.name: v.number for v in enum.values}.items() <= {v.name: v.number for v in
                        official.FindEnumTypeByName(enum.full_name).values}.items()  # fmt: skip
        for enum in file.enum_types_by_name.values():
            theirs_enum = {v.name: v.number for v in official.FindEnumTypeByName(enum.full_name).values}
            assert {v.name: v.number for v in enum.values}.items() <= theirs_enum.items(), enum.full_name
        for service in file.services_by_name.values():
            theirs_service = official.FindServiceByName(service.full_name)
            for method in service.methods:
                other = theirs_service.FindMethodByName(method.name)
                assert (method.input_type.full_name, method.output_type.full_name) == (
                    other.input_type.full_name, other.output_type.full_name), method.full_name  # fmt: skip
    assert {"tensorflow/core/framework/tensor.proto", "tensorflow_serving/apis/predict.proto",
            "inference/model_config.proto"} <= seen  # fmt: skip
    assert differences == [f"inference.ModelMetadataResponse.parameters: ours {PARAMETERS}, official None"]
    assert checked > 80


PARAMETERS = (6, 11, True, "inference.ModelMetadataResponse.ParametersEntry")
"""The one field mcdrop adds to the Open Inference Protocol (KServe's extension for model facts; Triton's
messages have no field 6, so its clients skip it)."""
