"""What every API says about a version's variants (``mcdrop export --quantize``): their names, sizes, the ops left
in float and the export's agreement figures with float32, flattened to text for metadata maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mcdrop.serving.models.manifest import FLOAT32, GraphName
from mcdrop.serving.models.repository import ModelVersion

__all__ = ["VariantFacts", "variant_facts"]


@dataclasses.dataclass(frozen=True)
class VariantFacts:
    name: str
    deterministic_bytes: int
    float_ops: tuple[str, ...]
    agreement: dict[str, str]
    """``figure`` (``OUTPUT/figure`` for several outputs) → value; a per-variant pair as ``figure/float32`` and
    ``figure/VARIANT``."""


def variant_facts(version: ModelVersion) -> list[VariantFacts]:
    """float32 first, then each exported variant."""
    manifest = version.manifest
    sizes = manifest.file_bytes
    found = [VariantFacts(FLOAT32, sizes.get(manifest.graphs[GraphName.DETERMINISTIC].file, 0), (), {})]
    for name, variant in manifest.variants.items():
        mc = variant.graphs.get(GraphName.MC)
        found.append(VariantFacts(name, sizes.get(variant.graphs[GraphName.DETERMINISTIC].file, 0),
                                  tuple(mc.float_ops) if mc is not None else (),
                                  _flat(variant.agreement, len(version.outputs) > 1)))  # fmt: skip
    return found


def _flat(agreement: Mapping[str, Any], several: bool) -> dict[str, str]:
    flat = {key: str(value) for key, value in agreement.items() if key not in ("outputs",)}
    for output, record in (agreement.get("outputs") or {}).items():
        start = f"{output}/" if several else ""
        for key, value in record.items():
            if isinstance(value, dict):
                flat |= {f"{start}{key}/{inner}": _text(v) for inner, v in value.items()}
            else:
                flat[start + key] = _text(value)
    return flat


def _text(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)
