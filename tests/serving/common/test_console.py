"""Progress bars show counts where the units mean something to a reader, a percentage otherwise."""

from __future__ import annotations

from rich.progress import MofNCompleteColumn, TaskProgressColumn

from mcdrop.serving.common.console import progress_bar


def test_progress_bar_shows_counts_or_a_percentage() -> None:
    counted = [type(c) for c in progress_bar().columns]
    percent = [type(c) for c in progress_bar(counts=False).columns]
    assert MofNCompleteColumn in counted and TaskProgressColumn not in counted
    assert TaskProgressColumn in percent and MofNCompleteColumn not in percent
