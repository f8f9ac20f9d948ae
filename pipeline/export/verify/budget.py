"""How much verification may hold in memory at once, and how many samples that allows per invoke.

Each verification invoke holds at most ``VERIFY_BUDGET_BYTES`` of live activations (measured per graph by
``mcdrop.serving.models.memory``), so a real-size model's statistics run their samples in chunks that fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.serving.core import invokes
from mcdrop.serving.models.manifest import GraphName
from mcdrop.serving.models.memory import Footprint, footprint, zero_feeds

__all__ = ["KERAS_MEMORY_FACTOR", "STAT_SAMPLES", "VERIFY_BUDGET_BYTES", "Budget", "measure"]

STAT_SAMPLES = 2000
"""Monte-Carlo samples of the statistical checks."""
VERIFY_BUDGET_BYTES = 256 * 2**20
"""Live activations of one verification invoke: the statistics run their samples in chunks that fit."""
KERAS_MEMORY_FACTOR = 4
"""The Keras reference (TensorFlow's graph executor) holds more than LiteRT's planned arena: smaller chunks."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """The measured activation footprints of the server graphs, and what they allow per invoke."""

    footprints: dict[str, Footprint]
    """``deterministic`` and (with dropout) ``mc_masked``: bytes of live activations per row and sample."""

    @property
    def masked(self) -> Footprint | None:
        return self.footprints.get(GraphName.MC_MASKED)

    def samples_per_invoke(self, rows: int) -> int:
        """Samples per verification invoke of ``rows`` rows that keep its activations within the budget."""
        masked = self.masked
        if masked is None:
            return STAT_SAMPLES
        what = "The verification invoke of mc.tflite"
        budget = max(VERIFY_BUDGET_BYTES, masked.bytes_for(rows, 1))
        return invokes.plan(masked, rows, STAT_SAMPLES, budget, what).samples

    def bytes_for(self, rows: int, samples: int) -> int:
        """Activation bytes of one mc_masked invoke (0 for a model without dropout)."""
        return self.masked.bytes_for(rows, samples) if self.masked else 0


def measure(blobs: dict[str, bytes], sites: Sequence[DropoutSite], row_shapes: dict[str, tuple[int, ...]]) -> Budget:
    """Activation bytes per row of the deterministic and the fed-mask graph."""
    found = {GraphName.DETERMINISTIC.value: footprint(blobs[GraphName.DETERMINISTIC], zero_feeds(row_shapes))}
    if sites:
        masks = [(site.feed_name, site.noise_shape, site.feed_dtype.as_numpy_dtype) for site in sites]
        found[GraphName.MC_MASKED.value] = footprint(blobs[GraphName.MC_MASKED], zero_feeds(row_shapes, masks))
    return Budget(found)
