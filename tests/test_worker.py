"""The job body on a real RQ worker: it moves orders once, counts them in Redis, and leaves
everything alone when its run is no longer the current one."""

from __future__ import annotations

import pytest
from redis import Redis

from harness import queue as rq_queue
from harness import worker
from harness.config import Settings
from harness.listener import StoppingWorker
from harness.orders import NORMAL, PENDING, PROCESSED, VIP, generate_chunk
from harness.state import RunState
from harness.store import open_store


@pytest.fixture
def seeded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """500 stored orders; the worker module configured for this test's settings."""
    monkeypatch.setattr(worker, "_settings", settings)
    monkeypatch.setattr(worker, "_store", None)
    store = open_store(settings)
    store.claim("run-a")
    orders = generate_chunk(1, 0, 500, [1, 1, 1, 1])
    store.insert_orders(orders)
    store.close()
    return [o.seq for o in orders if o.priority == VIP]


def _work(redis_conn: Redis) -> None:
    StoppingWorker(rq_queue.LISTEN_ORDER, connection=redis_conn).work(burst=True)


def test_a_batch_is_processed_and_counted_once(
    settings: Settings, redis_conn: Redis, seeded: list[int]
) -> None:
    state = RunState(redis_conn)
    state.begin({"runId": "run-a", "workMs": 0})
    vip_q = rq_queue.queues(redis_conn)[VIP]
    # The same batch twice, as a retried job would be.
    rq_queue.enqueue_batches(vip_q, "run-a", VIP, [seeded, seeded], timeout=60)
    _work(redis_conn)
    assert state.processed(VIP) == len(seeded)
    assert state.processed(NORMAL) == 0
    store = open_store(settings)
    try:
        assert store.count_orders(VIP, PROCESSED) == len(seeded)
        assert store.count_orders(NORMAL, PENDING) == 500 - len(seeded)
    finally:
        store.close()


def test_a_job_from_another_run_changes_nothing(
    settings: Settings, redis_conn: Redis, seeded: list[int]
) -> None:
    state = RunState(redis_conn)
    state.begin({"runId": "run-b", "workMs": 0})
    rq_queue.enqueue_batches(rq_queue.queues(redis_conn)[VIP], "run-a", VIP, [seeded], timeout=60)
    _work(redis_conn)
    assert state.processed(VIP) == 0
    store = open_store(settings)
    try:
        assert store.count_orders(status=PROCESSED) == 0
    finally:
        store.close()


def test_a_job_whose_run_lost_the_store_writes_nothing_and_is_not_retried(
    settings: Settings, redis_conn: Redis, seeded: list[int]
) -> None:
    """Redis still calls run-a current (its check passed, as for a worker paused between the
    check and the write), but run-b has claimed the store meanwhile: the fence refuses."""
    state = RunState(redis_conn)
    state.begin({"runId": "run-a", "workMs": 0})
    store = open_store(settings)
    try:
        store.claim("run-b")
        rq_queue.enqueue_batches(rq_queue.queues(redis_conn)[VIP], "run-a", VIP, [seeded],
                                 timeout=60, retry_intervals=[0.1])
        _work(redis_conn)
        assert store.count_orders(status=PROCESSED) == 0
    finally:
        store.close()
    assert state.processed(VIP) == 0
    assert rq_queue.counts(redis_conn)["total"]["failed"] == 0  # ended quietly, not retried
    assert rq_queue.counts(redis_conn)["total"]["scheduled"] == 0
