"""A pool of LiteRT interpreters for one graph file.

Threading: the pool is thread-safe; the ``Graph`` it lends is not, and belongs to
the borrower until the ``lease`` block ends (as in TF Serving's
``tflite_interpreter_pool``). Interpreters are lent last-in-first-out, so a
lightly loaded server keeps reusing the same warm one.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mcdrop.serving.errors import DeadlineExceeded
from mcdrop.serving.litert import Graph


class InterpreterPool:
    """``size`` interpreters over the same model bytes."""

    def __init__(self, content: bytes, *, size: int, threads: int) -> None:
        self.size = size
        self._free: queue.LifoQueue[Graph] = queue.LifoQueue()
        for _ in range(size):
            self._free.put(Graph(content, num_threads=threads))

    @contextmanager
    def lease(self, deadline: float | None = None) -> Iterator[Graph]:
        """Borrow an interpreter until the block ends.

        Args:
            deadline: ``time.monotonic()`` value after which to stop waiting.

        Raises:
            DeadlineExceeded: no interpreter became free before the deadline.
        """
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            graph = self._free.get(timeout=timeout)
        except queue.Empty:
            raise DeadlineExceeded("The deadline passed while waiting for a free interpreter.") from None
        try:
            yield graph
        finally:
            self._free.put(graph)
