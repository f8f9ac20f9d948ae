"""Capture in a real ``mcdrop serve``: SIGTERM publishes what is buffered (also with ``--workers 2``), SIGKILL never
leaves a half file where readers look, and the next start clears what the killed one left."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mcdrop.serving.client import Client
from mcdrop.serving.harness.measure import worker_pids
from tests.helpers import server_process


@pytest.mark.slow
def test_sigterm_with_two_workers_publishes_every_captured_row(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    server = server_process(model_repository, tmp_path / "server.log", "--workers", "2", "--capture-dir",
                            str(capture), "--capture-when", "always")  # fmt: skip
    with server:
        assert len(worker_pids(server.pid, 2)) == 2
        for seed in range(40):  # own connections: both workers answer some
            with Client(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                client.predict("digits", digits_rows, samples=5, seed=seed)
        assert not list(capture.glob("*/*.parquet"))  # still buffered (files rotate after 60 s)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    files = sorted(capture.glob("digits/*.parquet"))
    assert len({f.name.split("-")[-2] for f in files}) == 2, "one file per worker"
    seeds = [s for f in files for s in pq.read_table(f).column("seed").to_pylist()]
    assert sorted(seeds) == sorted(list(range(40)) * 8)  # every served row, once
    assert not list(capture.rglob(".*"))


@pytest.mark.slow
def test_sigkill_leaves_only_readable_files_and_the_next_start_clears_the_partial_one(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    flags = ("--workers", "1", "--capture-dir", str(capture), "--capture-when", "always",
             "--capture-file-seconds", "0.5")  # fmt: skip
    with server_process(model_repository, tmp_path / "server.log", *flags) as server, Client(server.address) as client:
        deadline = time.monotonic() + 30
        while len(list(capture.glob("digits/*.parquet"))) < 2 and time.monotonic() < deadline:
            client.predict("digits", digits_rows, samples=5)
        for _ in range(5):
            client.predict("digits", digits_rows, samples=5)  # rows in the open file at the kill
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
    published = sorted(capture.glob("digits/*.parquet"))
    assert len(published) >= 2
    for file in published:
        assert pq.read_table(file).num_rows > 0  # complete: footer and all
    left = list(capture.glob("digits/.*.partial"))
    assert left, "the killed server's open file stays hidden, under a name no reader takes"
    with server_process(model_repository, tmp_path / "again.log", *flags):
        pass
    assert not any(p.exists() for p in left)
    assert sorted(capture.glob("digits/*.parquet")) == published
