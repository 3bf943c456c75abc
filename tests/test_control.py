"""Run control on real Redis and real worker processes: cancel in every phase, the one-run
lock and its recovery, reset, health, and the queue controls."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BackgroundRun, wait_for
from redis import Redis
from rq import Queue

from harness import control
from harness import queue as rq_queue
from harness.config import Settings
from harness.errors import RunActive
from harness.listener import StoppingWorker
from harness.lock import LOCK_KEY, LockHolder, RunLock
from harness.orders import PENDING, PROCESSED
from harness.pipeline import run
from harness.record import RunRecord
from harness.state import ABORT_KEY, Phase, RunState
from harness.status import get_status
from harness.store import open_store


@pytest.fixture
def slow(settings: Settings) -> Settings:
    """Runs long enough to be caught in any phase: 1 ms of simulated work per order, jobs of
    200 orders (0.2 s each), NORMAL paged 300 at a time."""
    return settings.replace(quantity=4_000, chunk_size=500, orders_per_job=200,
                            normal_batch_size=300, work_ms=1.0)


def _orders_consistent(settings: Settings, record: RunRecord, generated: int) -> dict[str, int]:
    """No order half-updated; counters, record and store agree on what was processed."""
    store = open_store(settings)
    try:
        docs = store.get_orders(range(generated))
        processed = [d for d in docs if d["status"] == PROCESSED]
        pending = [d for d in docs if d["status"] == PENDING]
        assert len(processed) + len(pending) == len(docs)
        assert all(d["processedAt"] and d["startedAt"] and d["worker"] for d in processed)
        assert all(d["processedAt"] is None and d["worker"] is None for d in pending)
        assert record.counts.processed == len(processed)
        stored = store.get_run(record.run_id)
        assert stored is not None and stored.phase == "ABORTED"
    finally:
        store.close()
    state = RunState(Redis.from_url(settings.redis_address))
    assert state.processed("VIP") + state.processed("NORMAL") == len(processed)
    return {"processed": len(processed), "pending": len(pending)}


@pytest.mark.parametrize("phase", [
    Phase.GENERATING, Phase.WAITING_VIP_DRAIN, Phase.ENQUEUE_NORMAL, Phase.WAITING_NORMAL_DRAIN,
])
def test_cancel_in_each_phase_purges_and_removes_pending(
    slow: Settings, phase: Phase, redis_conn: Redis
) -> None:
    bg = BackgroundRun(slow, hold=phase)
    assert bg.reached.wait(30), f"the run never reached {phase}"
    result = control.cancel(slow)
    record = bg.join()
    assert result.cancelled and result.won and result.run_id == record.run_id
    assert record.phase == "ABORTED" and record.error and phase.value in record.error
    info = record.cancel
    assert info is not None and info.phase == phase.value and info.purge and info.remove_pending
    assert info.last_job_stopped_ms is not None and info.still_running == 0
    # Nothing can run any more: queues empty, nothing started, no worker left.
    counts = rq_queue.counts(redis_conn)["total"]
    assert counts["waiting"] == counts["active"] == 0
    assert rq_queue.worker_count(redis_conn) == 0
    assert not rq_queue.is_paused(redis_conn)  # the cancel restored what it paused
    counts = record.counts
    # What was generated, as the store held it before the pending orders went: every one
    # counted, VIP or NORMAL, enqueued or not.
    assert counts.vip + counts.normal == counts.generated
    assert counts.processed is not None
    assert counts.generated == counts.processed + info.removed_pending
    seen = _orders_consistent(slow, record, counts.generated)
    assert seen["pending"] == 0 and info.removed_pending > 0
    assert counts.generated < slow.quantity or phase is not Phase.GENERATING
    status = get_status(redis_conn)
    assert status["phase"] == "ABORTED" and status["progress"]["processedTotal"] == seen["processed"]


def test_cancel_without_purge_keeps_jobs_and_pending_orders_and_late_jobs_do_nothing(
    slow: Settings, redis_conn: Redis
) -> None:
    bg = BackgroundRun(slow, hold=Phase.WAITING_NORMAL_DRAIN)
    assert bg.reached.wait(30)
    control.cancel(slow, purge=False, remove_pending=False)
    record = bg.join()
    seen = _orders_consistent(slow, record, slow.quantity)
    assert record.cancel is not None
    assert seen["pending"] > 0 and record.cancel.removed_pending == 0
    waiting = rq_queue.counts(redis_conn)["total"]["waiting"]
    assert waiting > 0
    # A worker that takes the kept jobs now finds the run cancelled and changes nothing.
    StoppingWorker(rq_queue.LISTEN_ORDER, connection=redis_conn).work(burst=True)
    assert rq_queue.counts(redis_conn)["total"]["waiting"] == 0
    assert _orders_consistent(slow, record, slow.quantity) == seen


def test_of_two_cancels_at_once_the_first_wins_and_the_other_says_so(
    slow: Settings, redis_conn: Redis
) -> None:
    """`harness cancel` and `harness cancel --keep-pending` at the same moment: one request
    decides what happens to the pending orders, and each answer says whose it was."""
    bg = BackgroundRun(slow, hold=Phase.WAITING_NORMAL_DRAIN)
    assert bg.reached.wait(30)
    results: dict[bool, control.CancelResult] = {}
    go = threading.Barrier(2)

    def cancel(remove_pending: bool) -> None:
        go.wait()
        results[remove_pending] = control.cancel(slow, remove_pending=remove_pending)

    threads = [threading.Thread(target=cancel, args=(flag,)) for flag in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    record = bg.join()
    assert record.cancel is not None
    winner = [r for r in results.values() if r.won]
    loser = [r for r in results.values() if not r.won]
    assert len(winner) == len(loser) == 1
    assert winner[0].request == loser[0].request  # both report the request in effect
    assert winner[0].request is not None
    assert record.cancel.remove_pending == winner[0].request.remove_pending
    assert "by an earlier request" in loser[0].message
    assert f"removePending={winner[0].request.remove_pending}" in loser[0].message
    seen = _orders_consistent(slow, record, record.counts.generated)
    assert (seen["pending"] == 0) == winner[0].request.remove_pending


def test_cancel_with_reset_metrics_clears_the_live_state(slow: Settings, redis_conn: Redis) -> None:
    bg = BackgroundRun(slow, hold=Phase.WAITING_VIP_DRAIN)
    assert bg.reached.wait(30)
    control.cancel(slow, reset_metrics=True)
    record = bg.join()
    assert record.phase == "ABORTED"
    assert get_status(redis_conn)["phase"] == "IDLE"


def test_cancel_with_nothing_running_changes_nothing(settings: Settings, redis_conn: Redis) -> None:
    record = run(settings)
    before = RunState(redis_conn).read()
    result = control.cancel(settings)
    assert not result.cancelled and "nothing changed" in result.message
    assert RunState(redis_conn).read() == before and not redis_conn.exists(ABORT_KEY)
    store = open_store(settings)
    try:
        assert store.count_orders(status=PROCESSED) == settings.quantity
        stored = store.get_run(record.run_id)
        assert stored is not None and stored.phase == "DONE"
    finally:
        store.close()


def test_cancel_leaves_a_reset_or_bench_hold_alone(settings: Settings, redis_conn: Redis) -> None:
    hold = LockHolder.mine("bench-1")
    RunLock(redis_conn).acquire(hold)
    result = control.cancel(settings)
    assert not result.cancelled and "bench holds the lock" in result.message
    assert not redis_conn.exists(ABORT_KEY) and RunLock(redis_conn).holder() == hold
    with pytest.raises(RunActive, match="bench-1"):
        run(settings, force=True)


def test_force_cancels_the_active_run_and_takes_over(slow: Settings) -> None:
    first = BackgroundRun(slow, hold=Phase.WAITING_NORMAL_DRAIN)
    assert first.reached.wait(30)
    second = run(slow.replace(work_ms=0.0), force=True)
    assert second.phase == "DONE", second.error
    aborted = first.join()
    assert aborted.phase == "ABORTED" and aborted.cancel is not None
    assert aborted.cancel.remove_pending is False


def _harness(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return {"REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(settings.data_dir),
            "MONGO_URI": "", "HARNESS_SEED": "3"}


def test_a_killed_coordinators_lock_is_taken_over_at_once(
    settings: Settings, env: dict[str, str], redis_conn: Redis
) -> None:
    coordinator = _harness("run", "-n", "300000", "--no-progress", env=env)
    try:
        wait_for(lambda: get_status(redis_conn)["progress"]["generated"] > 0, "the run to start")
        os.kill(coordinator.pid, signal.SIGKILL)  # its own PID: no chance to clean up
        coordinator.wait(10)
    finally:
        coordinator.kill()
    stale = RunLock(redis_conn).holder()
    assert stale is not None and stale.pid == coordinator.pid and stale.is_dead()
    assert redis_conn.ttl(LOCK_KEY) > 5  # without the proof, the next run would wait this long
    record = run(settings)
    assert record.phase == "DONE", record.error
    store = open_store(settings)
    try:
        old = store.get_run(stale.run_id)
    finally:
        store.close()
    assert old is not None and old.phase == "ABORTED" and "coordinator died" in (old.error or "")


def test_reset_keeps_history_unless_all_and_is_refused_while_running(
    settings: Settings, slow: Settings, redis_conn: Redis
) -> None:
    first = run(settings)
    finished = rq_queue.counts(redis_conn)["total"]["completed"]
    assert finished == first.counts.jobs.vip + first.counts.jobs.normal
    done = control.reset(settings)
    assert done == {"orders": settings.quantity, "jobs": finished, "runs": 0}
    assert sum(rq_queue.counts(redis_conn)["total"].values()) == 0
    assert get_status(redis_conn)["phase"] == "IDLE"
    store = open_store(settings)
    try:
        assert store.count_orders() == 0
        assert [r.run_id for r in store.list_runs()] == [first.run_id]
    finally:
        store.close()

    bg = BackgroundRun(slow, hold=Phase.WAITING_NORMAL_DRAIN)
    assert bg.reached.wait(30)
    with pytest.raises(RunActive, match="--force"):
        control.reset(slow)
    assert bg.thread.is_alive()  # the refused reset touched nothing
    done = control.reset(slow, all_runs=True, force=True)
    assert bg.join().phase == "ABORTED"
    assert done["runs"] == 2 and done["orders"] > 0
    store = open_store(slow)
    try:
        assert store.count_orders() == 0 and store.list_runs() == []
    finally:
        store.close()


def test_health_paused_stuck_degraded_and_healthy(settings: Settings, redis_conn: Redis) -> None:
    run(settings)
    assert control.health(settings)["status"] == "healthy"

    rq_queue.pause(redis_conn)
    doc = control.health(settings)
    assert doc["status"] == "paused" and doc["paused"]
    rq_queue.resume(redis_conn)

    # Workers stopped (none started) with work pending: stuck once progress stops.
    impatient = settings.replace(stuck_after_s=0.5)
    bg = BackgroundRun(impatient, start_workers=False)
    wait_for(lambda: control.health(impatient)["isStuck"], "health to report stuck")
    doc = control.health(impatient)
    assert doc["status"] == "degraded" and doc["isProcessing"] and doc["queue"]["waiting"] > 0
    assert any("no progress" in r for r in doc["reasons"])
    control.cancel(impatient)
    assert bg.join().phase == "ABORTED"
    assert control.health(settings)["status"] == "aborted"

    # A failed job: degraded, and the count says so.
    control.reset(settings)
    Queue(rq_queue.QUEUE_NAMES["VIP"], connection=redis_conn).enqueue("harness.no_such_function")
    StoppingWorker(rq_queue.LISTEN_ORDER, connection=redis_conn).work(burst=True)
    doc = control.health(settings)
    assert doc["status"] == "degraded" and doc["hasFailedJobs"] and doc["queue"]["failed"] == 1
    assert control.HEALTH_EXIT[doc["status"]] == 3


@pytest.fixture
def paused_jobs(redis_conn: Redis) -> Iterator[Redis]:
    rq_queue.pause(redis_conn)
    for name in rq_queue.QUEUE_NAMES.values():
        Queue(name, connection=redis_conn).enqueue("harness.no_such_function")
    yield redis_conn
    rq_queue.resume(redis_conn)


def test_queue_jobs_status_and_clean(paused_jobs: Redis) -> None:
    conn = paused_jobs
    rows = rq_queue.jobs(conn, ["waiting", "active"])
    assert sorted(r["queue"] for r in rows) == sorted(rq_queue.QUEUE_NAMES.values())
    assert all(r["state"] == "waiting" for r in rows)
    assert rq_queue.counts(conn)["total"]["waiting"] == 2
    with pytest.raises(ValueError, match="cannot be removed"):
        rq_queue.clean(conn, "active")
    assert rq_queue.clean(conn, "waiting") == 2
    assert rq_queue.counts(conn)["total"]["waiting"] == 0


def test_queue_close_stops_a_worker_pool(env: dict[str, str], redis_conn: Redis) -> None:
    pool = _harness("worker", "-c", "1", env=env)
    try:
        wait_for(lambda: rq_queue.worker_count(redis_conn) == 1, "the worker to register")
        closer = _harness("queue", "close", env=env)
        out, err = closer.communicate(timeout=30)
        assert closer.returncode == 0, err
        assert "1 of 1 worker(s) stopped" in out
        assert pool.wait(15) == 0
    finally:
        pool.kill()


def test_cli_controls_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    """Each control's command, as the README lists them, on an idle harness."""
    from click.testing import CliRunner

    from harness.cli import main

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    assert "no run is active" in invoke("cancel").output
    assert invoke("queue", "pause").exit_code == 0
    result = invoke("health")
    assert result.exit_code == 4 and result.output.startswith("paused")
    assert "paused: True" in invoke("queue", "status").output
    assert invoke("queue", "resume").exit_code == 0
    assert invoke("health").exit_code == 0
    assert "no waiting/active jobs" in invoke("queue", "jobs").output
    assert "removed 0 failed" in invoke("queue", "clean", "failed").output
    assert "run history kept" in invoke("reset").output
    assert invoke("queue", "jobs", "-t", "bogus").exit_code == 2
    result = invoke("logs")  # the lines Redis keeps, file logging or not: the reset's among them
    assert result.exit_code == 0 and "reset" in result.output, result.output
    result = invoke("logs", "--file")
    assert result.exit_code == 1 and "no log file" in result.output and "BACKEND_LOGS" in result.output


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_stop_when_their_pool_is_killed(env: dict[str, str], redis_conn: Redis) -> None:
    """A pool killed outright (SIGKILL, OOM) runs no handler; its workers must not live on
    as orphans taking jobs."""
    from rq import Worker

    pool = _harness("worker", "-c", "2", env=env)
    try:
        # As soon as they are registered: a stop signal during RQ's start-up must end them
        # the normal way too.
        wait_for(lambda: rq_queue.worker_count(redis_conn) == 2, "two workers to register")
        pids = [w.pid for w in Worker.all(connection=redis_conn)]
        assert all(pid and pid != pool.pid for pid in pids)
        os.kill(pool.pid, signal.SIGKILL)  # the pool's own PID
        pool.wait(10)
    finally:
        pool.kill()
    wait_for(lambda: all(_gone(pid) for pid in pids), "the workers to exit")
    # The workers wrote to the pool's stderr (inherited): what they said on the way out
    # names the cause if one exits still registered.
    try:
        said = pool.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:  # something still holds the pipe: say so, not hang
        said = "(stderr still open after 10 s)"
    wait_for(lambda: not Worker.all(connection=redis_conn),
             f"the workers to unregister; their stderr:\n{said}")
