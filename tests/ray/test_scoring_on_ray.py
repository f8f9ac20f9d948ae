"""``mcdrop score`` on a 3-node Ray cluster: the in-process output, bit for bit, even when a node dies mid-job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mcdrop.serving.scoring.job import ScoreOptions, run_score

ray = pytest.importorskip("ray")
ROWS = 20_000


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_digits

    data = load_digits().data
    x = data[np.arange(ROWS) % len(data)]
    columns: dict[str, Any] = {f"pixel_{i}": x[:, i] for i in range(64)}
    columns["id"] = np.arange(ROWS)
    folder = tmp_path_factory.mktemp("digits-table")
    for part, rows in enumerate((slice(0, 7_000), slice(7_000, ROWS))):  # two files: offsets carry across
        pq.write_table(pa.table(columns).slice(rows.start, rows.stop - rows.start), folder / f"part-{part}.parquet")
    return folder


@pytest.fixture(scope="module")
def in_process(model_repository: Path, digits_table: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    output = tmp_path_factory.mktemp("in-process") / "scores.parquet"
    options = ScoreOptions(model_repository, "digits", str(digits_table), output, samples=30, seed=11, keep=("id",))
    summary = run_score(options)
    assert (summary.rows_in, summary.rows_scored, summary.rows_failed, summary.nodes) == (ROWS, ROWS, 0, 1)
    return pq.read_table(output)


def options(repository: Path, table: Path, output: Path) -> ScoreOptions:
    return ScoreOptions(repository, "digits", str(table), output, samples=30, seed=11, keep=("id",), batch_size=500,
                        ray="", workers=2)  # fmt: skip


def test_two_nodes_give_the_in_process_output_bit_for_bit(
    cluster: Any, model_repository: Path, digits_table: Path, in_process: pa.Table, tmp_path: Path
) -> None:
    output = tmp_path / "ray.parquet"
    summary = run_score(options(model_repository, digits_table, output))
    assert (summary.rows_in, summary.rows_scored, summary.rows_failed) == (ROWS, ROWS, 0)
    assert summary.nodes >= 2 and summary.backend == "ray"
    assert pq.read_table(output).equals(in_process)
    assert in_process.column("id").to_pylist() == list(range(ROWS))


def test_a_node_removed_mid_job_loses_and_duplicates_nothing(
    cluster: Any, model_repository: Path, digits_table: Path, in_process: pa.Table, tmp_path: Path
) -> None:
    from ray._private.state import available_resources_per_node  # no dashboard needed (the state API wants one)

    removed: list[str] = []
    head = cluster.head_node.node_id

    def remove_a_busy_worker_node(done: int, total: int) -> None:
        if removed or done < total // 4:
            return
        free = available_resources_per_node()
        busy = {node for node, resources in free.items() if resources.get("CPU", 0) < 1} - {head}  # an actor's CPU
        candidates = [n for n in cluster.worker_nodes if n.node_id in busy]
        assert candidates, f"no busy worker node: free {free}, workers {[n.node_id for n in cluster.worker_nodes]}"
        node = candidates[0]
        cluster.remove_node(node)
        removed.append(node.node_id)

    output = tmp_path / "ray.parquet"
    summary = run_score(options(model_repository, digits_table, output), progress=remove_a_busy_worker_node)
    assert removed, "no worker node was removed"
    assert (summary.rows_scored, summary.rows_failed) == (ROWS, 0)
    assert pq.read_table(output).equals(in_process)
    cluster.add_node(num_cpus=1)  # leave the cluster as the other tests found it
    cluster.wait_for_nodes()
