"""Test vectors of the mask scheme (``docs/mask-scheme.md``): seeds, rows and samples → keep flags, as
``MaskStream`` draws them, with each row's starting PCG64 state and first raw words for debugging a port.

``python -m mcdrop.serving.models.mask_vectors > docs/mask-vectors.json`` writes them; a test checks that the
committed file is what the code draws, and that the JavaScript reference (``mcdrop.pipeline.web``'s
``masks.js``) reproduces it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from mcdrop.serving.models.manifest import DropoutSite, NoiseKind
from mcdrop.serving.models.masks import SCHEME, MaskStream, row_states

__all__ = ["CASES", "vectors"]

CASES: tuple[dict[str, Any], ...] = (
    {"seed": 0, "first_row": 0, "rows": 2, "samples": 3, "sites": [("mask_a", 0.5, (8,))]},
    {"seed": 7, "first_row": 3, "rows": 2, "samples": 2, "sites": [("mask_dropout_1", 0.2, (64,)),
                                                                    ("mask_dropout_2", 0.5, (5,))]},
    {"seed": 2**63 - 1, "first_row": 0, "rows": 1, "samples": 4, "sites": [("mask_spatial", 0.1, (2, 3))]},
    {"seed": 123456789, "first_row": 1000, "rows": 3, "samples": 2, "sites": [("mask_lstm_input", 0.25, (4, 1, 6)),
                                                                                ("mask_dense", 0.9, (7,))]},
)  # fmt: skip
"""Rates from 0.1 to 0.9, site sizes that fill and that do not fill whole 64-bit words, several sites, rows
that do not start at 0 (batch scoring), multi-dimensional mask shapes, the largest seed."""


def _site(feed_name: str, rate: float, shape: tuple[int, ...]) -> DropoutSite:
    return DropoutSite(name=feed_name.removeprefix("mask_"), kind=NoiseKind.BERNOULLI, rate=rate,
                       noise_shape=shape, feed_name=feed_name)  # fmt: skip


def vectors() -> dict[str, Any]:
    """Every case of ``CASES`` with its states, first words and keep flags: per site, per sample, per row, a string of
    ``0``/``1`` (dropped/kept) over the mask's units in row-major order."""
    cases = []
    for case in CASES:
        sites = [_site(*site) for site in case["sites"]]
        stream = MaskStream(sites, case["seed"], case["rows"], case["first_row"])
        flags = stream.next(case["samples"])
        states = row_states(case["seed"], case["first_row"], case["rows"], stream=0)
        first_words = []
        for state in states:
            generator = np.random.PCG64()
            generator.state = state  # type: ignore[assignment]  # numpy's stub types the state dict narrowly
            first_words.append([f"{int(w):016x}" for w in generator.random_raw(4)])
        cases.append({
            "seed": str(case["seed"]),
            "first_row": case["first_row"],
            "rows": case["rows"],
            "samples": case["samples"],
            "sites": [{"feed_name": s.feed_name, "rate": s.rate, "noise_shape": list(s.noise_shape)} for s in sites],
            "row_states": [{"state": f"{s['state']['state']:032x}", "inc": f"{s['state']['inc']:032x}"}
                           for s in states],
            "first_words": first_words,
            "keep": {name: [["".join(map(str, row.reshape(-1))) for row in sample] for sample in value]
                     for name, value in flags.items()},
        })  # fmt: skip
    return {"scheme": SCHEME, "cases": cases}


if __name__ == "__main__":
    json.dump(vectors(), sys.stdout, indent=1)
    sys.stdout.write("\n")
