"""``mcdrop export-batch --ray``: each entry a Ray task on the cluster.

A worker or node that dies mid-entry is retried by Ray (``max_retries``); an entry's own failure is
not an exception (``run_entry`` reports it) and is never retried. Retrying is safe because an entry
publishes atomically and a rerun skips what an identical entry already published. The repository
must be one path every node sees (shared storage): checked from a worker before any entry starts.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcdrop.pipeline.jobs.batch import EntryResult, Job, run_entry
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.scoring.ray_cluster import connected

RETRIES = 3


def run_entries_on_ray(
    job: Job, address: str, cpus: float, on_result: Callable[[EntryResult], None] = lambda _: None
) -> list[EntryResult]:
    """Run every entry of ``job`` as a Ray task; results in job order."""
    # Workers do not share the driver's working directory: give them absolute paths.
    job = dataclasses.replace(job, path=job.path.resolve(), repository=job.repository.resolve(),
                              workdir=job.workdir.resolve())  # fmt: skip
    with connected(address) as ray:
        job.repository.mkdir(parents=True, exist_ok=True)
        problem = ray.get(ray.remote(num_cpus=0)(_writable).remote(str(job.repository)))
        if problem:
            raise InvalidArgument(
                f"The repository {job.repository} is not writable from a Ray worker ({problem}). Expected a path "
                "every node sees and can write (shared storage such as NFS)."
            )
        task = ray.remote(num_cpus=cpus, max_retries=RETRIES)(_run_entry)
        pending = {task.remote(job, entry): index for index, entry in enumerate(job.entries)}
        results: dict[int, EntryResult] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            results[index] = ray.get(done[0])
            on_result(results[index])
        return [results[i] for i in range(len(job.entries))]


def _run_entry(job: Job, entry: dict[str, Any]) -> EntryResult:
    import ray

    from mcdrop.pipeline.shared.quiet import quiet_tensorflow
    from mcdrop.pipeline.shared.strict_float32 import use_strict_float32

    use_strict_float32()
    quiet_tensorflow()
    result = run_entry(job, entry)
    result.node = ray.get_runtime_context().get_node_id()
    return result


def _writable(repository: str) -> str | None:
    """None if this worker can create and remove a file in ``repository``, else why not."""
    probe = Path(repository) / f".ray-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
