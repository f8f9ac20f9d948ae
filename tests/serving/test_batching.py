"""Cross-request batching: queued requests share an invoke and get exactly the answers they get alone."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.batching import Batcher
from mcdrop.serving.dataplane import DataPlane, PredictionRequest
from mcdrop.serving.errors import DeadlineExceeded
from mcdrop.serving.metrics import Metrics
from mcdrop.serving.repository import ModelRepository
from mcdrop.serving.settings import ServerSettings


def plane(repository: Path, pool_size: int = 1, **settings: object) -> DataPlane:
    store = ModelRepository(repository, pool_size=pool_size)
    store.scan()
    return DataPlane(store, ServerSettings(repository=str(repository), **settings).validate(), Metrics())  # type: ignore[arg-type]


@contextlib.contextmanager
def busy(batcher: Batcher) -> Iterator[None]:
    """As if invokes were running in every slot: new requests queue; on exit the slots free up at once."""
    with batcher._cond:
        saved, batcher._running = batcher._running, 10**6
    try:
        yield
    finally:
        with batcher._cond:
            batcher._running = saved
            batcher._cond.notify_all()


def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_queued_requests_share_one_invoke_and_answer_as_if_alone(
    model_repository: Path, digits_rows: np.ndarray
) -> None:
    alone = plane(model_repository, batch_requests=1)
    shared = plane(model_repository, batch_requests=8)
    requests = [PredictionRequest(model="digits", x=digits_rows[: 1 + i % 3], samples=40, seed=100 + i)
                for i in range(6)]  # fmt: skip
    expected = [alone.predict(r) for r in requests]

    pool = shared.model("digits").pools["mc_masked"]
    batcher = shared._batcher(pool)
    with ThreadPoolExecutor(6) as threads:
        with busy(batcher):  # an invoke is running: every request queues behind it
            futures = [threads.submit(shared.predict, r) for r in requests]
            wait_until(lambda: len(batcher._pending) == 6)
        answers = [f.result(timeout=30) for f in futures]
    assert batcher.invokes == 1  # six requests, one invoke
    for got, want in zip(answers, expected, strict=True):
        assert got.summary.mean.tobytes() == want.summary.mean.tobytes()
        assert got.summary.std.tobytes() == want.summary.std.tobytes()
        assert got.seed == want.seed and got.summary.mean.shape == want.summary.mean.shape


def test_only_requests_with_the_same_samples_and_within_the_limits_share(
    model_repository: Path, digits_rows: np.ndarray
) -> None:
    shared = plane(model_repository, batch_requests=2)
    pool = shared.model("digits").pools["mc_masked"]
    batcher = shared._batcher(pool)
    requests = [PredictionRequest(model="digits", x=digits_rows[:1], samples=t, seed=1) for t in (10, 20, 10, 10)]
    futures = []
    with ThreadPoolExecutor(4) as threads, busy(batcher):
        for count, request in enumerate(requests, 1):  # queued in this order
            futures.append(threads.submit(shared.predict, request))
            wait_until(lambda count=count: len(batcher._pending) == count)
    for future, request in zip(futures, requests, strict=True):
        assert future.result(timeout=30).samples == request.samples
    # [10, 10] (at most 2), then [20], then [10]: three invokes for four requests.
    assert batcher.invokes == 3


def test_a_queued_request_whose_deadline_passes_leaves_the_queue(
    model_repository: Path, digits_rows: np.ndarray
) -> None:
    shared = plane(model_repository)
    pool = shared.model("digits").pools["mc_masked"]
    batcher = shared._batcher(pool)
    request = PredictionRequest(model="digits", x=digits_rows, samples=10)
    failure: list[BaseException] = []

    def late() -> None:
        try:
            shared.predict(request, deadline=time.monotonic() + 0.2)
        except DeadlineExceeded as exc:
            failure.append(exc)

    with busy(batcher):
        thread = threading.Thread(target=late)
        thread.start()
        thread.join(10)
    assert len(failure) == 1 and not batcher._pending
    assert shared.predict(request).samples == 10  # and the batcher still works


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_requests_must_be_positive(value: str) -> None:
    from mcdrop.serving.errors import InvalidArgument
    from mcdrop.serving.settings import load_settings

    with pytest.raises(InvalidArgument, match="Invalid setting batch_requests"):
        load_settings({}, {"MCDROP_BATCH_REQUESTS": value})


def test_many_threads_at_once_all_get_their_own_answers(model_repository: Path, digits_rows: np.ndarray) -> None:
    shared = plane(model_repository, batch_requests=8, pool_size=2)
    requests = [PredictionRequest(model="digits", x=digits_rows[: 1 + i % 4], samples=20, seed=i) for i in range(8)]
    expected = [plane(model_repository, batch_requests=1).predict(r).summary.mean.tobytes() for r in requests]

    def client(index: int) -> list[bool]:
        return [shared.predict(requests[(index + j) % 8]).summary.mean.tobytes() == expected[(index + j) % 8]
                for j in range(60)]  # fmt: skip

    with ThreadPoolExecutor(8) as threads:
        answers = [same for result in threads.map(client, range(8)) for same in result]
    assert len(answers) == 480 and all(answers)
