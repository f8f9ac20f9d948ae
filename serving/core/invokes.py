"""Split a request's T x B sample rows into invokes whose activations fit a memory budget.

A Monte-Carlo request runs T samples of B rows. In one invoke its activation memory grows with
T x B (an EfficientNetB0 at 224 px needs about 10 MB per sample row), so the data plane runs
``samples`` samples of ``rows`` rows per invoke, as ``plan`` chooses from the graph's measured
``Footprint``: all rows and as many samples as fit, or, when not even one sample of every row fits,
fewer rows. A row's masks depend only on the seed, the row and the sample index
(``mcdrop.serving.models.masks``), and each sample row is computed on its own, so the answer is the same
bit for bit for every budget.
"""

from __future__ import annotations

import dataclasses

from mcdrop.serving.errors import ResourceExhausted
from mcdrop.serving.models.memory import Footprint

__all__ = ["MIB", "InvokePlan", "plan"]

MIB = 2**20


@dataclasses.dataclass(frozen=True)
class InvokePlan:
    """``samples`` samples of ``rows`` rows per invoke."""

    rows: int
    samples: int

    def invokes(self, batch: int, samples: int) -> int:
        return -(-batch // self.rows) * -(-samples // self.samples)


def plan(footprint: Footprint, batch: int, samples: int, budget_bytes: int, what: str) -> InvokePlan:
    """The largest invokes of a ``batch`` x ``samples`` request whose activations stay within ``budget_bytes``.

    Args:
        what: names the model and graph in the error.

    Raises:
        ResourceExhausted: not even one sample of one row fits the budget.
    """
    if footprint.bytes_for(batch, samples) <= budget_bytes:  # the common case: the whole request in one invoke
        return InvokePlan(batch, samples)
    one_row = footprint.bytes_for(1, 1)
    if one_row > budget_bytes:
        raise ResourceExhausted(
            f"{what} needs {one_row / MIB:.1f} MiB of activations for one sample of one row, above the invoke "
            f"memory budget of {budget_bytes / MIB:.1f} MiB. Expected a budget of at least {-(-one_row // MIB)} MiB: "
            "raise --max-invoke-mb (MCDROP_MAX_INVOKE_MB)."
        )
    rows = batch  # the largest row count whose one-sample invoke fits every term
    for fixed, per_row, per_sample in footprint.terms:
        if per_row + per_sample:
            rows = min(rows, (budget_bytes - fixed) // (per_row + per_sample))
    fitting = samples
    for fixed, per_row, per_sample in footprint.terms:
        if per_sample:
            fitting = min(fitting, (budget_bytes - fixed - rows * per_row) // (rows * per_sample))
    return InvokePlan(int(rows), int(min(samples, max(1, fitting))))
