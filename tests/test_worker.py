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


STARTS_AND_FAILS = """
import sys
from redis.exceptions import TimeoutError
from harness.connection import redis_client
from harness.queue import LISTEN_ORDER
from harness.worker import HarnessWorker

def subscribe(self):  # registered already; the SUBSCRIBE times out, as on a busy machine
    raise TimeoutError("Timeout reading from socket")

HarnessWorker.subscribe = subscribe
conn = redis_client(sys.argv[1])
HarnessWorker(LISTEN_ORDER, connection=conn).work(burst=True)
"""


def test_a_worker_whose_start_up_fails_after_registering_is_not_left_registered(
    redis_url: str, redis_conn: Redis
) -> None:
    """RQ registers a worker before it subscribes, outside the block that unregisters it:
    a Redis error between the two left a dead worker listed for minutes (health and
    `queue close` count it). HarnessWorker unregisters on the way out."""
    import subprocess
    import sys

    from rq import Worker

    done = subprocess.run([sys.executable, "-c", STARTS_AND_FAILS, redis_url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "stopped: TimeoutError" in done.stderr, done.stderr
    assert redis_conn.hexists(next(iter(redis_conn.keys("rq:worker:*"))), "death")  # it was registered
    assert Worker.all(connection=redis_conn) == []
