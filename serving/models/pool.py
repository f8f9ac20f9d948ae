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
from mcdrop.serving.models.litert import Graph

__all__ = ["InterpreterPool"]


class InterpreterPool:
    """Up to ``size`` interpreters over the same model bytes, created as concurrency needs them.

    One interpreter exists from the start (it runs the load-time checks); another is created only when a request
    finds every existing one busy, so an idle or lightly used version holds one interpreter's memory (weights
    packed by XNNPACK, activations) instead of ``size``.
    """

    def __init__(self, content: bytes, *, size: int, threads: int, lone_threads: int = 1) -> None:
        self.size = size
        self._content = content
        self._threads = threads
        self._lone_threads = lone_threads
        self._free: queue.LifoQueue[Graph] = queue.LifoQueue()
        self._free.put(Graph(content, num_threads=threads))
        self._created = 1
        self._grow = threading.Lock()
        self._lone: Graph | None = None
        self._lone_free = threading.Lock()

    @property
    def created(self) -> int:
        """Interpreters created so far (the many-thread one not counted)."""
        return self._created

    @contextmanager
    def lease(self, deadline: float | None = None, *, alone: bool = False) -> Iterator[Graph]:
        """Borrow an interpreter until the block ends.

        Args:
            deadline: ``time.monotonic()`` value after which to stop waiting.
            alone: the request is alone in flight: lend the many-thread interpreter if there is one and it is free.

        Raises:
            DeadlineExceeded: no interpreter became free before the deadline.
        """
        if alone and self._lone_threads > self._threads and self._lone_free.acquire(blocking=False):
            try:
                if self._lone is None:
                    self._lone = Graph(self._content, num_threads=self._lone_threads)
                yield self._lone
            finally:
                self._lone_free.release()
            return
        graph = self._take(deadline)
        try:
            yield graph
        finally:
            self._free.put(graph)

    def _take(self, deadline: float | None) -> Graph:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._grow:
            if self._created < self.size:
                self._created += 1
                try:
                    return Graph(self._content, num_threads=self._threads)
                except BaseException:
                    self._created -= 1
                    raise
        timeout = None if deadline is None else min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            raise DeadlineExceeded("The deadline passed while waiting for a free interpreter.") from None
