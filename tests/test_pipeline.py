"""End to end on real Redis and real worker processes: every order processed exactly once,
VIP strictly first (proven from the stored timestamps), and the run recorded."""

from __future__ import annotations

import pytest
from conftest import assert_complete
from redis import Redis

from harness.config import Settings
from harness.orders import PENDING, PROCESSED, VIP
from harness.pipeline import run
from harness.state import Phase
from harness.status import get_status
from harness.store import open_store


@pytest.mark.parametrize("concurrency", [4, 1])
def test_20000_orders_processed_once_vip_first(
    settings: Settings, redis_conn: Redis, concurrency: int
) -> None:
    settings = settings.replace(quantity=20_000, chunk_size=3_000, orders_per_job=250,
                                normal_batch_size=2_000, concurrency=concurrency)
    record = run(settings)
    docs = assert_complete(settings, record, redis_conn)
    workers = {d["worker"] for d in docs}
    # The run's own processes, sampled: each worker the pool started, busy or not.
    assert record.memory is not None and record.memory.method == "psutil"
    assert record.memory.workers == concurrency and len(workers) <= concurrency
    assert record.memory.worker_peak_mb and record.memory.coordinator_cpu_s
    # Inside the run, from the store: every order in a 100 ms bin, latency over every order.
    assert record.timeline is not None and record.timeline.bin_ms == 100
    assert sum(record.timeline.vip) == record.counts.vip
    assert sum(record.timeline.normal) == record.counts.normal
    assert record.latency is not None
    assert record.latency.vip.wait.count == record.counts.vip
    assert record.latency.normal.service.count == record.counts.normal
    # NORMAL orders wait for every VIP order: the barrier, seen in their queue wait
    vip_wait, normal_wait = record.latency.vip.wait, record.latency.normal.wait
    assert normal_wait.p50_ms is not None and vip_wait.p50_ms is not None
    assert normal_wait.p50_ms > vip_wait.p50_ms


def test_one_order_per_job_like_the_original(settings: Settings) -> None:
    settings = settings.replace(quantity=300, orders_per_job=1, chunk_size=100, concurrency=2)
    record = run(settings)
    assert record.counts.jobs.vip == record.counts.vip
    assert record.counts.jobs.normal == record.counts.normal
    assert_complete(settings, record)


def test_status_after_a_run_has_the_original_shape(settings: Settings, redis_conn: Redis) -> None:
    record = run(settings)
    doc = get_status(redis_conn)
    assert set(doc) >= {
        "generationTimeMs", "enqueueVipTimeMs", "enqueueNormalTimeMs", "processing",
        "totalTimeMs", "counts", "phase", "lastRunId", "throughput", "eta", "progress"}
    assert doc["phase"] == Phase.DONE and doc["lastRunId"] == record.run_id
    assert set(doc["processing"]["vip"]) == {"start", "end", "timeMs", "count"}
    assert doc["progress"] == {"target": settings.quantity, "generated": settings.quantity,
                               "processedTotal": settings.quantity}
    assert doc["counts"]["vip"] == record.counts.vip
    assert doc["eta"] == {"estimatedMs": 0, "progressPercent": 100.0}
    assert set(doc["throughput"]) == {"vip", "normal", "overall"}


def test_seeded_runs_store_the_same_orders(settings: Settings) -> None:
    run(settings)
    store = open_store(settings)
    first = [(d["id"], d["tier"], d["valor"]) for d in store.get_orders(range(50))]
    store.close()
    run(settings)
    store = open_store(settings)
    try:
        assert [(d["id"], d["tier"], d["valor"]) for d in store.get_orders(range(50))] == first
        assert len(store.list_runs()) == 2
    finally:
        store.close()


def test_the_mongodb_backend_end_to_end(settings: Settings, mongo_standin: str) -> None:
    """The pymongo code path with real worker processes (stand-in or server: see conftest)."""
    settings = settings.replace(quantity=1_500, chunk_size=400, orders_per_job=100,
                                mongo_uri=mongo_standin)
    record = run(settings)
    assert record.backend == "mongo"
    assert "s3cret-pw" not in repr(record.to_json())
    assert_complete(settings, record)


def test_failing_jobs_end_the_run_in_error_with_the_reason(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that raises on every try (here: every store update, in the forked worker
    processes) must not leave the coordinator waiting: once its retries are spent and
    nothing else can move, the run ends ERROR, recorded, naming the failure."""
    from harness.store.sqlite import SQLiteStore

    def broken(self: SQLiteStore, *args: object) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(SQLiteStore, "mark_processed", broken)
    record = run(settings.replace(job_retries=1, retry_backoff_s=0.1, stuck_after_s=0.5))
    assert record.phase == "ERROR" and record.error is not None
    assert "failed 2 time(s) and were dead-lettered" in record.error
    assert "disk on fire" in record.error
    assert record.counts.processed == 0
    store = open_store(settings)
    try:
        stored = store.get_run(record.run_id)
        assert stored is not None and stored.phase == "ERROR"
        assert store.count_orders(status=PENDING) == settings.quantity
    finally:
        store.close()


def test_phases_run_in_order_and_status_follows_them(
    settings: Settings, redis_conn: Redis
) -> None:
    """Status read from another connection during the run: active, in phase order, with
    progress that never goes backwards."""
    from harness.pipeline import Progress

    order = [Phase.GENERATING, Phase.WAITING_VIP_DRAIN, Phase.ENQUEUE_NORMAL,
             Phase.WAITING_NORMAL_DRAIN]
    seen: list[dict] = []

    last: list[Progress] = []

    def watch(p: Progress) -> None:
        doc = get_status(redis_conn)
        last[:] = [p]
        if p.phase is Phase.DONE:  # the last report, once the run is recorded
            return
        assert doc["isProcessing"] is True and doc["phase"] == p.phase
        seen.append(doc)

    settings = settings.replace(quantity=6_000, chunk_size=1_000)
    record = run(settings, progress=watch)
    assert record.phase == "DONE"
    # The last report says DONE with every order processed: a progress bar reaches 100 %.
    [final] = last
    assert (final.phase, final.target, final.generated, final.processed) == (Phase.DONE, 6_000, 6_000, 6_000)
    # ... on the record's clock, so the bar's last rate is the summary's.
    assert final.elapsed_s == pytest.approx((record.total_time_ms or 0) / 1000)
    assert record.throughput is not None and final.rate == pytest.approx(record.throughput.overall, rel=1e-3)
    phases = [order.index(Phase(d["phase"])) for d in seen]
    assert phases == sorted(phases) and phases[0] == 0
    assert {Phase.GENERATING, Phase.ENQUEUE_NORMAL} <= {order[i] for i in phases}
    generated = [d["progress"]["generated"] for d in seen]
    processed = [d["progress"]["processedTotal"] for d in seen]
    assert generated == sorted(generated) and processed == sorted(processed)
    assert generated[0] == 1_000 and generated[-1] == 6_000
    normal_started = [d for d in seen if d["counts"]["normal"] > 0]
    assert all(d["counts"]["vip"] == record.counts.vip for d in normal_started)


def test_simulated_work_reaches_the_workers(settings: Settings) -> None:
    """--work-ms travels with the run (through Redis) to every worker, order by order."""
    settings = settings.replace(quantity=200, chunk_size=100, orders_per_job=20, work_ms=2.0)
    record = run(settings)
    assert record.phase == "DONE"
    store = open_store(settings)
    try:
        docs = store.get_orders(range(200))
    finally:
        store.close()
    assert all(d["processedAt"] - d["startedAt"] >= 0.0019 for d in docs)
    assert record.parameters["work_ms"] == 2.0


@pytest.mark.parametrize(("mix", "vip"), [("BRONZE=1,OURO=1", False), ("DIAMANTE=1", True)])
def test_runs_with_only_one_priority(settings: Settings, mix: str, vip: bool) -> None:
    """No VIP order (nothing to wait for) or no NORMAL order (nothing to page): still DONE."""
    settings = settings.replace(quantity=700, tier_mix=mix)
    record = run(settings)
    assert record.phase == "DONE", record.error
    assert record.counts.vip == (700 if vip else 0)
    assert record.counts.processed == 700
    assert record.barrier is not None
    assert record.barrier.held is True and record.barrier.gap_ms is None


def test_a_job_still_running_from_an_earlier_run_blocks_the_next_run(
    settings: Settings, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new run reuses seqs, so a job still running from before could update its orders
    behind the counters' back: the run refuses to start, and clears nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from rq.registry import StartedJobRegistry

    from harness import pipeline
    from harness.errors import RunActive
    from harness.queue import queues

    first = run(settings)
    vip_q = queues(redis_conn)[VIP]
    vip_q.enqueue("time.sleep", 30)
    env = {**os.environ, "REDIS_URL": str(settings.redis_url)}
    worker = subprocess.Popen([sys.executable, "-m", "harness.cli", "worker", "-c", "1"], env=env,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while StartedJobRegistry(queue=vip_q).count == 0:
            assert worker.poll() is None
            time.sleep(0.01)  # polling a condition, not waiting out a race
        monkeypatch.setattr(pipeline, "IDLE_WAIT_S", 0.3)
        with pytest.raises(RunActive, match="1 job\\(s\\) of an earlier run are still running"):
            run(settings)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the pool and the worker it forked
        worker.wait()
    store = open_store(settings)
    try:
        assert store.count_orders(status=PROCESSED) == settings.quantity
        assert [r.run_id for r in store.list_runs()] == [first.run_id]
    finally:
        store.close()
