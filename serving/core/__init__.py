"""The prediction core: a request planned against its model version, masks drawn, graphs invoked, uncertainty
summarised. No transport, no server policy: the server's data plane and batch scoring both call it.

``Sampler`` and ``Plan`` load on first use, so that the request types (which the Python client shares) do not
pull in the LiteRT runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcdrop.serving.core.requests import (
    DEFAULT_INTERVAL,
    Limits,
    Mode,
    OutputPrediction,
    Prediction,
    PredictionRequest,
)

if TYPE_CHECKING:
    from mcdrop.serving.core.sampler import Plan, Sampler

__all__ = [
    "DEFAULT_INTERVAL",
    "Limits",
    "Mode",
    "OutputPrediction",
    "Plan",
    "Prediction",
    "PredictionRequest",
    "Sampler",
]


def __getattr__(name: str) -> Any:
    if name in ("Plan", "Sampler"):
        from mcdrop.serving.core import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
