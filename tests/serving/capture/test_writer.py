"""The capture writer: rotation by size and age, atomic publication, bounded queue and directory, counted losses —
and full, read-only and deleted directories while serving."""

from __future__ import annotations

import collections
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mcdrop.serving.capture.rule import parse_rule
from mcdrop.serving.capture.writer import CaptureOptions, CaptureWriter
from mcdrop.serving.core import PredictionRequest, Sampler
from mcdrop.serving.core.requests import Prediction
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.models.repository import ModelRepository
from tests.helpers import in_process_server, small_filesystem


class Counts:
    """The writer's counters (``mcdrop.serving.capture.writer.Counters``), kept for the test."""

    def __init__(self) -> None:
        self.rows = 0
        self.lost: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.files = 0

    def captured(self, model: str, rows: int) -> None:
        self.rows += rows

    def dropped(self, model: str, reason: str, rows: int) -> None:
        self.lost[reason] += rows

    def write_failed(self, reason: str) -> None:
        self.errors[reason] += 1

    def published(self, model: str, nbytes: int) -> None:
        self.files += 1


Answer = tuple[Manifest, dict[str, np.ndarray], Prediction]


@pytest.fixture(scope="module")
def answer(model_repository: Path, digits_rows: np.ndarray) -> Answer:
    store = ModelRepository(model_repository, pool_size=1, max_versions=2)
    store.scan()
    sampler = Sampler(store)
    plan = sampler.plan(PredictionRequest("digits", digits_rows, samples=10, seed=1))
    return plan.version.manifest, plan.inputs, sampler.run(plan)


def writer(directory: Path, counts: Counts, **options: object) -> CaptureWriter:
    settings: dict[str, object] = {"directory": directory, "rule": parse_rule("always"), "max_bytes": 1 << 30,
                                   "file_bytes": 1 << 30, "file_seconds": 3600.0}  # fmt: skip
    settings.update(options)
    return CaptureWriter(CaptureOptions(**settings), counts)  # type: ignore[arg-type]


def rows_in(directory: Path) -> int:
    return sum(pq.read_table(f).num_rows for f in directory.glob("*/*.parquet"))


def test_files_rotate_by_size_and_every_row_lands_exactly_once(answer: Answer, tmp_path: Path) -> None:
    counts = Counts()
    capture = writer(tmp_path, counts, file_bytes=1)  # every write completes a file
    for index in range(6):
        capture.offer(*answer, request_id=f"r{index}")
        time.sleep(0.3)  # past the writer's batching interval: one write (and file) per request
    assert capture.close()
    files = sorted(tmp_path.glob("digits/*.parquet"))
    assert len(files) >= 3 and counts.files == len(files)
    ids = [i for f in files for i in pq.read_table(f).column("request_id").to_pylist()]
    assert sorted(collections.Counter(ids).items()) == [(f"r{i}", 8) for i in range(6)]
    assert counts.rows == 48 and not counts.lost and not list(tmp_path.rglob(".*"))


def test_a_file_is_published_when_old_enough_without_a_shutdown(answer: Answer, tmp_path: Path) -> None:
    counts = Counts()
    capture = writer(tmp_path, counts, file_seconds=0.3)
    capture.offer(*answer)
    partial = list(tmp_path.glob("digits/.*.partial"))
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("digits/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows_in(tmp_path) == 8 and counts.rows == 8
    assert not any(p.exists() for p in partial)  # renamed, not copied
    capture.close()


def test_a_full_queue_or_a_full_budget_drops_rows_and_counts_them(answer: Answer, tmp_path: Path) -> None:
    counts = Counts()
    capture = writer(tmp_path / "q", counts, queue_bytes=1)  # no request fits
    started = time.perf_counter()
    for _ in range(50):
        capture.offer(*answer)
    assert time.perf_counter() - started < 0.5  # never waits for the disk
    capture.close()
    assert counts.lost == {"queue_full": 400} and counts.rows == 0
    counts = Counts()
    capture = writer(tmp_path / "b", counts, max_bytes=30_000, file_bytes=1)
    for _ in range(40):
        capture.offer(*answer)
        time.sleep(0.02)
    capture.close()
    assert counts.lost["budget"] > 0 and counts.rows + counts.lost["budget"] == 320
    assert rows_in(tmp_path / "b") == counts.rows
    held = sum(f.stat().st_size for f in (tmp_path / "b").rglob("*.parquet"))
    assert held <= 30_000 + 20_000  # overshoot: at most the last file written


def test_after_close_rows_are_counted_not_queued(answer: Answer, tmp_path: Path) -> None:
    counts = Counts()
    capture = writer(tmp_path, counts)
    capture.close()
    capture.offer(*answer)
    assert counts.lost == {"closed": 8}


@pytest.mark.parametrize(("size", "read_only", "reason"), [("96k", False, "ENOSPC"), ("1m", True, "EROFS")])
def test_a_full_or_read_only_capture_directory_leaves_serving_alone_and_is_counted(
    model_repository: Path, tmp_path: Path, size: str, read_only: bool, reason: str
) -> None:
    from sklearn.datasets import load_digits

    x = load_digits().data[:400].astype(np.float32)  # 400 rows x 64 pixels: more than 96 KiB of captures
    with small_filesystem(tmp_path / "capture", size, read_only) as directory:
        settings = {"capture_dir": str(directory / "rows"), "capture_when": "always", "capture_file_mb": 0.01}
        with in_process_server(model_repository, **settings) as (server, client):
            answers = [client.predict("digits", x, samples=5, seed=s) for s in range(6)]
            assert all(len(a.mean) == 400 for a in answers)
        registry = server.metrics.registry  # read after shutdown: every row is written or counted by then

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        assert value("mcdrop_capture_write_errors_total", reason=reason) >= 1
        lost = value("mcdrop_capture_dropped_rows_total", model="digits", reason="write_error")
        kept = value("mcdrop_captured_rows_total", model="digits")
        budget = value("mcdrop_capture_dropped_rows_total", model="digits", reason="budget")
        assert lost > 0 and kept + lost + budget == 2400  # every row captured or counted as lost
        assert value("mcdrop_requests_total", api="mcdrop.v1", method="Predict", code="OK") == 6  # all answered
        assert not list(directory.rglob("*.partial"))
        assert rows_in(directory / "rows") == kept


def test_a_capture_directory_deleted_while_serving_is_made_again(model_repository: Path, tmp_path: Path,
                                                                 digits_rows: np.ndarray) -> None:  # fmt: skip
    directory = tmp_path / "capture"
    settings = {"capture_dir": str(directory), "capture_when": "always", "capture_file_seconds": 0.2}
    with in_process_server(model_repository, **settings) as (server, client):
        client.predict("digits", digits_rows, seed=1)
        time.sleep(0.8)
        assert rows_in(directory) == 8
        shutil.rmtree(directory)
        for seed in range(2, 12):
            client.predict("digits", digits_rows, seed=seed)  # answered whatever happens to the directory
            time.sleep(0.05)
    registry = server.metrics.registry
    captured = registry.get_sample_value("mcdrop_captured_rows_total", {"model": "digits"})
    lost = registry.get_sample_value("mcdrop_capture_dropped_rows_total", {"model": "digits",
                                     "reason": "write_error"}) or 0.0  # fmt: skip
    assert directory.is_dir() and rows_in(directory) == captured - 8 > 0
    assert captured + lost == 88
