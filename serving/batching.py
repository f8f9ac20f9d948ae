"""Cross-request batching: concurrent Monte-Carlo requests for one graph and T share one invoke.

Leader/follower, without a waiting window: a request that finds an interpreter slot free
runs at once, taking along every compatible request queued behind it (same T, up to
``max_requests`` requests and ``max_rows`` T x B rows); requests that arrive while all
slots are busy queue up and go together in the next invoke. An idle server therefore
adds no latency, and a busy one amortises the per-invoke and per-op overheads over
several requests. Rows are independent in every graph (each row has its own masks, drawn
from its own request's seed), so every request's samples are bit-identical to running
alone.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping

import numpy as np

from mcdrop.serving.errors import DeadlineExceeded
from mcdrop.serving.pool import InterpreterPool


@dataclasses.dataclass(eq=False)
class _Job:
    feeds: Mapping[str, np.ndarray]
    samples: int
    rows: int
    arrived: float
    alone: bool
    taken: bool = False
    """In an invoke (its own or another request's): no longer queued."""
    done: bool = False
    output: np.ndarray | None = None
    error: BaseException | None = None
    queue_s: float = 0.0
    compute_s: float = 0.0


class Batcher:
    """Runs one graph's invokes for requests that may share them. Thread-safe."""

    def __init__(self, pool: InterpreterPool, *, max_requests: int, max_rows: int) -> None:
        self._pool = pool
        self._max_requests = max_requests
        self._max_rows = max_rows
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._running = 0
        self.invokes = 0
        """Invokes run so far (the test and the bench read how many requests shared them)."""

    def run(
        self, feeds: Mapping[str, np.ndarray], samples: int, deadline: float | None, alone: bool = False
    ) -> tuple[np.ndarray, float, float]:
        """Invoke on ``feeds`` (``x``: ``[B, ...]``, masks ``[T, B, ...]``), possibly with other requests' rows;
        return this request's ``[T, B, ...]`` output, its queue seconds and its compute seconds.

        Raises:
            DeadlineExceeded: the deadline passed before an interpreter was free.
        """
        job = _Job(feeds, samples, len(feeds["x"]), time.perf_counter(), alone)
        with self._cond:
            self._pending.append(job)
        while True:
            batch = self._wait_for_turn(job, deadline)
            if batch is None:  # another request's invoke carried this one
                break
            self._invoke(batch)
            if job.done:
                break
        if job.error is not None:
            raise job.error
        assert job.output is not None
        return job.output, job.queue_s, job.compute_s

    def _wait_for_turn(self, job: _Job, deadline: float | None) -> list[_Job] | None:
        with self._cond:
            while not job.done:
                if not job.taken and self._running < self._pool.size:
                    self._running += 1
                    return self._take()
                timeout = None if deadline is None or job.taken else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    self._pending.remove(job)
                    raise DeadlineExceeded("The deadline passed while waiting for a free interpreter.")
                self._cond.wait(timeout)
        return None

    def _take(self) -> list[_Job]:
        """The oldest pending request and the compatible ones behind it, within the limits (caller holds the lock)."""
        first = self._pending[0]
        batch, rows = [first], first.samples * first.rows
        for job in self._pending[1:]:
            if len(batch) == self._max_requests:
                break
            if job.samples == first.samples and rows + job.samples * job.rows <= self._max_rows:
                batch.append(job)
                rows += job.samples * job.rows
        for job in batch:
            self._pending.remove(job)
            job.taken = True
        return batch

    def _invoke(self, batch: list[_Job]) -> None:
        try:
            feeds = batch[0].feeds if len(batch) == 1 else _joined([job.feeds for job in batch])
            with self._pool.lease(alone=len(batch) == 1 and batch[0].alone) as graph:
                started = time.perf_counter()
                output = graph.run(feeds)[0]
                finished = time.perf_counter()
            self.invokes += 1
            offset = 0
            for job in batch:
                job.output = output if len(batch) == 1 else output[:, offset : offset + job.rows]
                offset += job.rows
                job.queue_s, job.compute_s = started - job.arrived, finished - started
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error, not only the leader's
            for job in batch:
                job.error = exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._running -= 1
                self._cond.notify_all()


def _joined(feeds: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One invoke's feeds from several requests': inputs stacked on the batch axis 0, masks ``[T, B, ...]`` on 1."""
    return {name: np.concatenate([f[name] for f in feeds], axis=0 if name == "x" else 1) for name in feeds[0]}
