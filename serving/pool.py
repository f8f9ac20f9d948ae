"""A pool of LiteRT interpreters for one graph file.

Threading: the pool is thread-safe; the ``Graph`` it lends is not, and belongs to
the borrower until the ``lease`` block ends (as in TF Serving's
``tflite_interpreter_pool``). Interpreters are lent last-in-first-out, so a
lightly loaded server keeps reusing the same warm one.

With ``lone_threads`` > ``threads`` the pool also keeps one interpreter with that many
threads, lent only to a request that asks for it (one alone in flight on the server):
idle cores then shorten it — XNNPACK splits the work of each op, and the answer is
bit-identical to a one-thread invoke — while under load every request keeps one thread
and the cores go to concurrency instead.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mcdrop.serving.errors import DeadlineExceeded
from mcdrop.serving.litert import Graph


class InterpreterPool:
    """``size`` interpreters over the same model bytes."""

    def __init__(self, content: bytes, *, size: int, threads: int, lone_threads: int = 1) -> None:
        self.size = size
        self._free: queue.LifoQueue[Graph] = queue.LifoQueue()
        for _ in range(size):
            self._free.put(Graph(content, num_threads=threads))
        self._lone = Graph(content, num_threads=lone_threads) if lone_threads > threads else None
        self._lone_free = threading.Lock()

    @contextmanager
    def lease(self, deadline: float | None = None, *, alone: bool = False) -> Iterator[Graph]:
        """Borrow an interpreter until the block ends.

        Args:
            deadline: ``time.monotonic()`` value after which to stop waiting.
            alone: the request is alone in flight: lend the many-thread interpreter if there is one and it is free.

        Raises:
            DeadlineExceeded: no interpreter became free before the deadline.
        """
        if alone and self._lone is not None and self._lone_free.acquire(blocking=False):
            try:
                yield self._lone
            finally:
                self._lone_free.release()
            return
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            graph = self._free.get(timeout=timeout)
        except queue.Empty:
            raise DeadlineExceeded("The deadline passed while waiting for a free interpreter.") from None
        try:
            yield graph
        finally:
            self._free.put(graph)
