"""A real multi-node Ray cluster on this machine: a head and two worker nodes, one CPU each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.workers import exclusive

ray = pytest.importorskip("ray")


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The cluster, one worker's at a time: the suite's two xdist workers may run this folder's two files at once."""
    from ray.cluster_utils import Cluster

    with exclusive(tmp_path_factory, "ray-cluster"):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
