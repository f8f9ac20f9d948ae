"""The fingerprint: outputs on fixed inputs and fixed host masks, recomputed by a server before it serves a version.

It catches damaged weights even where a file's digest was recomputed after the damage. A model with several
inputs or outputs records each by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.pipeline.export.verify.common import batch_of, run_graph
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import Fingerprint, GraphName
from mcdrop.serving.models.masks import SCHEME, fingerprint_feeds

__all__ = ["FINGERPRINT_ROWS", "FINGERPRINT_SAMPLES", "FINGERPRINT_SEED", "fingerprint"]

FINGERPRINT_SEED = 12345
FINGERPRINT_ROWS = 4
FINGERPRINT_SAMPLES = 4


def fingerprint(
    graphs: dict[str, Graph], sites: Sequence[DropoutSite], x: dict[str, np.ndarray], names: list[str]
) -> Fingerprint:
    """The deterministic graph's outputs on ``x``, and (with dropout) mc_masked's with the server's seeded masks."""

    def recorded(outputs: list[np.ndarray]) -> Any:
        if len(names) == 1:
            return outputs[0].tolist()
        return {name: output.tolist() for name, output in zip(names, outputs, strict=True)}

    masked = None
    if sites:
        specs = [site.to_manifest() for site in sites]  # as a server reads them
        feeds = fingerprint_feeds(specs, FINGERPRINT_SEED, batch_of(x), FINGERPRINT_SAMPLES)
        masked = recorded(run_graph(graphs[GraphName.MC_MASKED], {**x, **feeds}, names))
    return Fingerprint(
        seed=FINGERPRINT_SEED,
        masks=SCHEME,
        rows=batch_of(x),
        samples=FINGERPRINT_SAMPLES,
        x=x["x"].tolist() if list(x) == ["x"] else {name: value.tolist() for name, value in x.items()},
        deterministic=recorded(run_graph(graphs[GraphName.DETERMINISTIC], x, names)),
        mc_masked=masked,
    )
