"""What a hostile or careless user found, each reproduced on real processes, Redis and
store: a paused coordinator waking up inside the next run, a last record the store would
not take, a batch a dead worker left between RQ's lists, a database file removed mid-run.
Each test failed on the code before the fix it names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from conftest import BackgroundRun, assert_complete, on_backend, wait_for
from redis import Redis

from harness import history
from harness import queue as rq_queue
from harness.cli import main
from harness.config import Settings
from harness.datatypes import LockHolder
from harness.launch import child_env
from harness.lock import LOCK_KEY
from harness.orders import NORMAL, VIP, id_prefix
from harness.pipeline import Progress, run
from harness.state import Phase
from harness.status import get_status
from harness.store import open_store, sqlite_path
from harness.supervision import VANISHED_AFTER_S, Supervisor


@pytest.fixture
def slow(settings: Settings) -> Settings:
    return settings.replace(quantity=4_000, chunk_size=500, orders_per_job=200,
                            normal_batch_size=300, work_ms=1.0, retry_backoff_s=0.2)


PAUSE_SELF = """
import os, signal, sys
from harness.config import Settings
from harness.pipeline import run

paused = []

def progress(p):  # between two chunks: no store transaction is open
    if p.generated >= 10_000 and not paused:
        paused.append(p)
        os.kill(os.getpid(), signal.SIGSTOP)

sys.exit(0 if run(Settings.from_env(), progress=progress).is_done else 1)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_paused_coordinator_wakes_up_and_writes_nothing_into_the_next_run(
    settings: Settings, redis_conn: Redis, backend: str, request: pytest.FixtureRequest
) -> None:
    """Run A is stopped (SIGSTOP) mid-generation; its lock expires; run B takes the store
    and finishes; A is continued. Before the fence, A inserted one more chunk of its own
    orders into B's table. Now A fails without a write, B's orders and record are B's, and
    A's record says it was taken over."""
    settings = on_backend(settings, backend, request)
    a_settings = settings.replace(quantity=200_000, chunk_size=2_000, orders_per_job=500,
                                  work_ms=0.05, seed=111)
    a = subprocess.Popen([sys.executable, "-c", PAUSE_SELF], env=child_env(a_settings),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: psutil.Process(a.pid).status() == psutil.STATUS_STOPPED, "A to pause", 60)
        a_id = get_status(redis_conn)["lastRunId"]
        redis_conn.delete(LOCK_KEY)  # what its 30 s expiry would do while A stays paused
        b_settings = settings.replace(quantity=20_000, chunk_size=2_000, seed=222)
        b = run(b_settings)
        assert_complete(b_settings, b, redis_conn)
        os.kill(a.pid, signal.SIGCONT)
        output = a.communicate(timeout=120)[0]
    finally:
        if a.poll() is None:
            a.send_signal(signal.SIGCONT)
            a.kill()
            a.wait()
    assert a.returncode == 1, output
    # It woke up, tried its next write, and was refused (or found its lock gone first).
    assert "nothing was written" in output or "lost the run lock" in output, output
    store = open_store(settings)
    try:
        docs = store.get_orders(range(200_000))
        a_record, b_record = store.get_run(a_id), store.get_run(b.run_id)
    finally:
        store.close()
    # Every order in the store is one of B's: its seeds' ids, seqs 0..N-1, all processed.
    assert len(docs) == 20_000
    assert {int(d["id"].replace("-", "")[:12], 16) for d in docs} == {id_prefix(222)}
    assert b_record is not None and b_record.phase == "DONE" and b_record.counts.processed == 20_000
    assert a_record is not None and a_record.phase == "ABORTED"
    assert a_record.error is not None and f"taken over by run {b.run_id}" in a_record.error
    status = get_status(redis_conn)  # A did not touch the live state either
    assert status["lastRunId"] == b.run_id and status["phase"] == "DONE"


def test_the_last_record_is_put_aside_when_the_store_stays_down_and_saved_by_the_next_command(
    slow: Settings, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a run whose last write did not get through within the store timeout kept
    its checkpoint's phase (GENERATING ...) forever. Now the last write is retried until a
    deadline (shortened here), then put aside in the data folder; the next command saves it."""
    import sqlite3

    monkeypatch.setattr(history, "FINAL_DEADLINE_S", 1.0)
    lock: list[sqlite3.Connection] = []

    def take_the_store(p: Progress) -> None:
        if p.phase is Phase.WAITING_NORMAL_DRAIN and not lock:
            conn = sqlite3.connect(sqlite_path(slow), isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN EXCLUSIVE")  # as a foreign process would hold it
            lock.append(conn)

    record = BackgroundRun(slow.replace(store_timeout_s=0.5), take_the_store).join()
    assert record.phase == "ERROR" and "store unavailable" in (record.error or "")
    aside = list(history.aside_dir(slow).glob("*.json"))
    assert [f.name for f in aside] == [f"{record.run_id}.json"]
    lock[0].execute("ROLLBACK")
    lock[0].close()
    store = open_store(slow)
    try:
        stored = store.get_run(record.run_id)
    finally:
        store.close()
    assert stored is not None and stored.phase == "WAITING_NORMAL_DRAIN"  # its last checkpoint
    shown = CliRunner().invoke(main, ["runs", "--data-dir", str(slow.data_dir),
                                      "--redis-url", slow.redis_address])
    assert shown.exit_code == 0 and "ERROR" in shown.output
    assert f"saved the ERROR record of run {record.run_id}" in shown.output  # it says so
    store = open_store(slow)
    try:
        stored = store.get_run(record.run_id)
    finally:
        store.close()
    assert stored is not None and stored.phase == "ERROR" and stored.error == record.error
    assert not list(history.aside_dir(slow).glob("*.json"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("priority", [VIP, NORMAL])
def test_a_batch_that_vanished_with_its_worker_is_enqueued_again(
    slow: Settings, redis_conn: Redis, priority: str, backend: str, request: pytest.FixtureRequest
) -> None:
    """Workers take jobs with BLPOP (they listen on two queues); one killed right after
    its BLPOP leaves the job in no queue and no registry. Popping a job id here does exactly
    that. Before: the run ended ERROR after stuck_after_s ("N VIP order(s) are unaccounted
    for"). Now the coordinator enqueues the pending orders again and the run completes."""
    slow = on_backend(slow, backend, request)
    vanished: list[bytes] = []

    def pop_one(p: Progress) -> None:
        q = rq_queue.queues(redis_conn)[priority]
        if not vanished and q.count > 1 and (job_id := redis_conn.lpop(q.key)) is not None:
            vanished.append(job_id)

    record = BackgroundRun(slow.replace(stuck_after_s=30), pop_one).join()
    assert vanished, "no job was taken"
    assert_complete(slow, record, redis_conn)
    jobs = record.counts.jobs.vip if priority == VIP else record.counts.jobs.normal
    assert jobs > (-(-record.counts.vip // slow.orders_per_job) if priority == VIP
                   else -(-record.counts.normal // slow.orders_per_job))  # enqueued again


def test_a_stall_with_nothing_pending_scans_the_store_at_most_once_a_vanish_period(
    settings: Settings, redis_conn: Redis
) -> None:
    """Orders missing, nothing in flight, no dead letter: the coordinator looks for pending
    orders to enqueue again. One such look that finds none reads every order (0.15 s at 1M
    on SQLite, whose orders have no status index), and a stall lasts up to stuck_after_s, so
    it looks again only after VANISHED_AFTER_S, however often the drain loop checks."""
    scans: list[float] = []

    def requeue(priority: str) -> int:
        scans.append(time.monotonic())
        return 0

    sup = Supervisor(settings, redis_conn, LockHolder.mine("r"), 0, lambda: None, requeue)
    stalled_since: float | None = time.monotonic() - 10 * VANISHED_AFTER_S
    started = time.monotonic()
    for _ in range(30):  # the drain loop checks every RETRY_CHECK_S; here back to back
        stalled_since = sup.look_after_batches(VIP, 100, stalled_since)
    elapsed = time.monotonic() - started
    assert stalled_since is not None  # still stalled: nothing was found
    assert 1 <= len(scans) <= 1 + elapsed / VANISHED_AFTER_S, (len(scans), elapsed)


def test_a_store_file_removed_mid_run_fails_the_run_clearly(slow: Settings, redis_conn: Redis) -> None:
    """Before: the run printed DONE, then `harness runs` said "no runs recorded yet"."""
    path = Path(sqlite_path(slow))

    def remove(p: Progress) -> None:
        if p.phase is Phase.WAITING_NORMAL_DRAIN and path.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    record = BackgroundRun(slow, remove).join()
    assert record.phase == "ERROR"
    assert "removed or replaced" in (record.error or ""), record.error
    store = open_store(slow)  # a new file at that path, holding the run's end
    try:
        stored = store.get_run(record.run_id)
    finally:
        store.close()
    assert stored is not None and stored.phase == "ERROR"
    shown = CliRunner().invoke(main, ["runs", "--data-dir", str(slow.data_dir)])
    assert record.run_id in shown.output and "ERROR" in shown.output
