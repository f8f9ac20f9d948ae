"""The capture writer: a bounded queue on the request path, one background thread that writes Parquet files.

On the request path ``CaptureWriter.offer`` picks the rows (``rule``), keeps references to the request's inputs and
answer, and queues them — or, when the queue holds ``queue_bytes`` already, drops them and counts the drop. It never
blocks and never raises: a request is answered whatever happens to its capture.

The thread turns queued requests into Arrow tables (``records``) and appends them to one open file per model
version, ``DIR/MODEL/.MODEL-vVERSION-TIME-PID-SEQ.parquet.partial`` (hidden, and not ``.parquet``: readers never see
it). A file is published when it reaches ``file_bytes`` or ``file_seconds``, or on ``close``: Parquet footer
written, fsync, rename to ``MODEL-vVERSION-TIME-PID-SEQ.parquet``, fsync of the folder. A killed server leaves only
its partial file, never a half file under a ``.parquet`` name; the next start removes partial files of processes
that no longer run.

Rows are lost only in counted ways: ``queue_full`` (requests arrive faster than the disk takes them), ``budget``
(the directory holds ``max_bytes``), ``write_error`` (read-only or full disk, directory deleted: every row of the
file that failed, and rows arriving in the second after), ``schema`` (a model whose columns clash with the
capture's), ``closed`` (after shutdown began). A deleted directory is created again for the next file.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mcdrop.serving.capture.records import CapturedRequest, SchemaClash, capture_schema, captured_table
from mcdrop.serving.capture.rule import CaptureRule
from mcdrop.serving.core.requests import Prediction
from mcdrop.serving.errors import errno_name
from mcdrop.serving.models.manifest import Manifest

__all__ = ["PARTIAL_SUFFIX", "CaptureOptions", "CaptureWriter", "Counters"]

log = logging.getLogger("mcdrop.capture")
PARTIAL_SUFFIX = ".partial"
ROW_GROUP_ROWS = 4096
"""Rows buffered per file before a row group is written (also written at rotation and shutdown)."""
BATCH_SECONDS = 0.25
"""The writer wakes this often and converts what arrived meanwhile as one table: woken per request, it would pay
Arrow's per-column cost per request (0.8 ms for digits, against 0.03 ms in a batch)."""
RETRY_SECONDS = 1.0
"""After a write error, rows are dropped (and counted) for this long before the next file is tried."""
BUDGET_SCAN_SECONDS = 1.0
LOG_EVERY_SECONDS = 60.0
_PARTIAL = re.compile(r"^\..+-(\d+)-\d+\.parquet" + re.escape(PARTIAL_SUFFIX) + "$")


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    directory: Path
    rule: CaptureRule
    max_bytes: int
    """The most the capture directory may hold; rows beyond are dropped (``budget``), files are never deleted."""
    file_bytes: int
    file_seconds: float
    queue_bytes: int = 64 << 20
    compression: str = "snappy"


class Counters(Protocol):
    """Where the writer reports (the server's Prometheus metrics)."""

    def captured(self, model: str, rows: int) -> None: ...
    def dropped(self, model: str, reason: str, rows: int) -> None: ...
    def write_failed(self, reason: str) -> None: ...
    def published(self, model: str, nbytes: int) -> None: ...


@dataclasses.dataclass
class _OpenFile:
    partial: Path
    final: Path
    writer: pq.ParquetWriter
    opened: float
    rows: int = 0
    size: int = 0
    buffered: list[pa.Table] = dataclasses.field(default_factory=list)
    buffered_rows: int = 0
    buffered_bytes: int = 0
    """Of the buffered tables, counted once as each is added (``Table.nbytes`` walks every buffer)."""


class CaptureWriter:
    """Captures rows of answers into Parquet files from one background thread. ``offer`` is thread-safe."""

    def __init__(self, options: CaptureOptions, counters: Counters) -> None:
        self.options = options
        self._counters = counters
        self._queue: collections.deque[CapturedRequest] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._files: dict[tuple[str, int], _OpenFile] = {}
        self._schemas: dict[tuple[str, int], pa.Schema | None] = {}
        self._sequence = 0
        self._retry_at = 0.0
        self._used: tuple[float, int] = (-1e9, 0)  # (scanned at, bytes then)
        self._written_since_scan = 0
        self._logged: dict[str, float] = {}
        try:
            options.directory.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(options.directory)
        except OSError as exc:  # serving goes on; every file that fails later is counted
            log.error("capture directory unusable; rows will be dropped and counted until it is",
                      extra={"directory": str(options.directory), "error": str(exc)})  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="mcdrop-capture", daemon=True)
        self._thread.start()

    # The request path -----------------------------------------------------------------------------

    def offer(self, manifest: Manifest, inputs: Mapping[str, np.ndarray], prediction: Prediction,
              request_id: str = "") -> None:  # fmt: skip
        """Queue the rows of ``prediction`` the rule captures. Never blocks, never raises."""
        try:
            rows = self.options.rule.rows(prediction)
            if not len(rows):
                return
            item = CapturedRequest(manifest, inputs, prediction, rows, request_id or uuid.uuid4().hex, time.time())
            size = item.nbytes
            with self._cond:
                reason = "closed" if self._closed else None
                if reason is None and self._queued_bytes + size > self.options.queue_bytes:
                    reason = "queue_full"
                if reason is None:
                    self._queued_bytes += size
                    self._queue.append(item)
                    if self._queued_bytes > self.options.queue_bytes // 2:
                        self._cond.notify()  # else the writer wakes every BATCH_SECONDS and takes a batch
            if reason is not None:
                self._counters.dropped(prediction.model, reason, len(rows))
                self._log_once(reason, "capture dropped rows", model=prediction.model, reason=reason)
        except Exception as exc:  # noqa: BLE001 - a bug here must not fail the request
            self._counters.dropped(prediction.model, "error", len(prediction.outputs[0].summary.mean))
            self._log_once("offer", "capture failed", error=repr(exc))

    def close(self, timeout: float = 30.0) -> bool:
        """Stop taking rows, write what is queued and publish every open file; True when done within ``timeout``."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._queued_bytes

    # The writer thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(timeout=self._wait_seconds())
                items = list(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                closing = self._closed
            batches: dict[tuple[str, int], list[CapturedRequest]] = {}
            for item in items:
                batches.setdefault((item.prediction.model, item.prediction.version), []).append(item)
            for key, batch in batches.items():
                self._take(key, batch)
            self._rotate(force=closing)
            if closing:
                with self._cond:
                    leftover = list(self._queue)  # offered just before close saw the flag
                    self._queue.clear()
                for item in leftover:
                    self._counters.dropped(item.prediction.model, "closed", len(item.rows))
                return

    def _wait_seconds(self) -> float:
        if not self._files:
            return BATCH_SECONDS
        oldest = min(f.opened for f in self._files.values())
        return max(0.05, min(BATCH_SECONDS, oldest + self.options.file_seconds - time.monotonic()))

    def _take(self, key: tuple[str, int], items: list[CapturedRequest]) -> None:
        """Append the captured rows of one version's queued requests to its open file."""
        model, rows = key[0], sum(len(item.rows) for item in items)
        try:
            schema = self._schema(key, items[0].manifest)
            if schema is None:
                self._counters.dropped(model, "schema", rows)
                return
            table = captured_table(items, schema)
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the capture
            self._counters.dropped(model, "error", rows)
            self._log_once("convert", "capture failed", model=model, error=repr(exc))
            return
        if time.monotonic() < self._retry_at:
            self._counters.dropped(model, "write_error", rows)
            return
        incoming = int(table.nbytes)
        if self._over_budget(incoming):
            self._counters.dropped(model, "budget", rows)
            self._log_once("budget", "capture directory full; dropping rows", max_mb=self.options.max_bytes >> 20)
            return
        current = self._files.get(key)
        try:
            if current is None:
                current = self._files[key] = self._open(key, schema)
            current.buffered.append(table)
            current.buffered_rows += rows
            current.buffered_bytes += incoming
            if current.buffered_rows >= ROW_GROUP_ROWS:
                self._flush(current)
        except OSError as exc:
            self._failed(key, exc, extra_rows=0 if current is not None else rows)

    def _schema(self, key: tuple[str, int], manifest: Manifest) -> pa.Schema | None:
        if key not in self._schemas:
            try:
                self._schemas[key] = capture_schema(manifest)
            except SchemaClash as exc:
                self._schemas[key] = None
                log.error("capture impossible for this version", extra={"model": key[0], "version": key[1],
                                                                      "reason": str(exc)})  # fmt: skip
        return self._schemas[key]

    def _open(self, key: tuple[str, int], schema: pa.Schema) -> _OpenFile:
        model, version = key
        folder = self.options.directory / model
        folder.mkdir(parents=True, exist_ok=True)  # again: the directory may have been deleted while serving
        self._sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{model}-v{version}-{stamp}-{os.getpid()}-{self._sequence:06d}.parquet"
        partial = folder / f".{name}{PARTIAL_SUFFIX}"
        # A path, not a Python file: Arrow then writes natively, without the interpreter lock.
        try:
            writer = pq.ParquetWriter(str(partial), schema, compression=self.options.compression)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()  # created, then the first bytes failed
            raise
        return _OpenFile(partial, folder / name, writer, time.monotonic())

    def _flush(self, current: _OpenFile) -> None:
        if not current.buffered:
            return
        table = pa.concat_tables(current.buffered)
        current.writer.write_table(table)  # raises before the rows count as written
        current.buffered, current.buffered_rows, current.buffered_bytes = [], 0, 0
        current.rows += table.num_rows
        size = os.stat(current.partial).st_size
        self._written_since_scan += size - current.size
        current.size = size

    def _rotate(self, force: bool) -> None:
        now = time.monotonic()
        for key, current in list(self._files.items()):
            try:
                due = force or now - current.opened >= self.options.file_seconds
                if not due and current.size + current.buffered_bytes < self.options.file_bytes:
                    continue
                self._flush(current)
                self._publish(key, current)
            except OSError as exc:
                self._failed(key, exc, extra_rows=0)

    def _publish(self, key: tuple[str, int], current: _OpenFile) -> None:
        current.writer.close()
        _fsync(current.partial)
        size = os.stat(current.partial).st_size
        self._written_since_scan += size - current.size  # the footer
        os.rename(current.partial, current.final)
        _fsync(current.final.parent)
        del self._files[key]
        self._counters.captured(key[0], current.rows)
        self._counters.published(key[0], size)

    def _failed(self, key: tuple[str, int], exc: OSError, extra_rows: int) -> None:
        """A write, fsync or rename failed: the file's rows are lost (counted), its partial file removed."""
        current = self._files.pop(key, None)
        lost = extra_rows
        if current is not None:
            lost += current.rows + current.buffered_rows
            with contextlib.suppress(Exception):
                current.writer.close()
            with contextlib.suppress(OSError):
                current.partial.unlink()
        reason = _reason(exc)
        self._counters.write_failed(reason)
        self._counters.dropped(key[0], "write_error", lost)
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self._log_once("write:" + reason, "capture write failed; serving goes on", model=key[0], error=str(exc),
                       rows_lost=lost)  # fmt: skip

    def _over_budget(self, incoming: int) -> bool:
        now = time.monotonic()
        scanned, used = self._used
        if now - scanned >= BUDGET_SCAN_SECONDS:
            used = _folder_bytes(self.options.directory)
            self._used, self._written_since_scan = (now, used), 0
        buffered = sum(f.buffered_bytes for f in self._files.values())
        return used + self._written_since_scan + buffered + incoming > self.options.max_bytes

    def _log_once(self, key: str, message: str, **fields: Any) -> None:
        """Log a repeated problem once a minute, not once per request."""
        now = time.monotonic()
        if now - self._logged.get(key, -1e9) >= LOG_EVERY_SECONDS:
            self._logged[key] = now
            log.warning(message, extra=fields)


def _reason(exc: OSError) -> str:
    return errno_name(exc)


def _fsync(path: Path) -> None:
    """Make a file's bytes, or a folder's entries, durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _folder_bytes(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _remove_stale_partials(directory: Path) -> None:
    """Partial files of processes that no longer run (a killed server's): never to be completed."""
    for partial in directory.glob(f"*/.*{PARTIAL_SUFFIX}"):
        match = _PARTIAL.match(partial.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            with contextlib.suppress(OSError):
                partial.unlink()
                log.info("removed a partial capture file of a stopped server", extra={"file": str(partial)})
