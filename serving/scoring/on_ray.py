"""Score units on a Ray cluster: a Ray Data actor pool, one data plane (and LiteRT interpreter) per actor.

The driver sends work units (file, row range) and receives each unit's rows back in order
(``preserve_order``), so it can write one file and check every row exactly once. A worker or node
that dies takes its actor with it; Ray Data restarts the actor and re-runs the unit, whose output is
the same because a row's masks depend only on the seed and its global position. The input files
must be readable from every node (shared storage on a real cluster).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from mcdrop.serving.errors import MCDropError, first_line
from mcdrop.serving.scoring.inputs import Unit
from mcdrop.serving.scoring.ray_cluster import connected
from mcdrop.serving.scoring.scorer import Scorer, ScoreSettings

__all__ = ["score_on_ray"]


class RayScorer:
    """A Ray Data actor: loads the model in ``__init__`` (interpreters cannot be pickled), scores unit items."""

    def __init__(self, settings: ScoreSettings) -> None:
        import ray

        self._scorer = Scorer(settings)
        self._node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        items = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        tables = [self._scorer.score(Unit.from_item(item)) for item in items]
        table = pa.concat_tables(tables)
        return table.append_column("_mcdrop_node", pa.array([self._node] * table.num_rows, pa.string()))


def score_on_ray(settings: ScoreSettings, work: list[Unit], address: str, workers: int) -> Iterator[pa.Table]:
    """Unit tables in input order, scored by ``workers`` actors on the cluster at ``address`` ("" = a local Ray)."""
    with connected(address) as ray:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        items = [unit.as_item() for unit in work]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        scored = dataset.map_batches(
            RayScorer,
            fn_constructor_kwargs={"settings": settings},
            batch_size=1,
            num_cpus=settings.threads,
            compute=ray.data.ActorPoolStrategy(size=workers),
        )
        try:
            yield from scored.iter_batches(batch_size=None, batch_format="pyarrow")
        except Exception as exc:
            raise _unwrapped(exc) from exc


def _unwrapped(exc: BaseException) -> BaseException:
    """Our own error from inside an actor (e.g. a bad file), rather than Ray's wrapper around it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MCDropError):
            return _one_line(seen)
        seen = getattr(seen, "cause", None) or seen.__cause__
    return exc


def _one_line(error: MCDropError) -> MCDropError:
    """``error`` with only its first line, as the nearest class of its own that takes a message alone (an error
    type with another constructor, e.g. ``RpcFailed(code, message)``, becomes its parent: same exit code)."""
    for kind in type(error).__mro__:
        if issubclass(kind, MCDropError):
            try:
                return kind(first_line(error))
            except TypeError:
                continue
    return MCDropError(first_line(error))
