"""Looking after a run while its coordinator works through the phases.

The coordinator calls :meth:`Supervisor.tick` per chunk, page and poll. A tick keeps the
lock alive, turns a cancel request, a lost live state or a stop signal into an exception at
that safe point, saves a checkpoint when one is due and reports progress. While the
coordinator waits on a drain, :meth:`Supervisor.look_after_batches` retries batches whose
worker died or whose backoff is over, and gives up when nothing can move any more.

Signals only set a flag (see :meth:`Supervisor.catch_signals`): raising from inside a store
call left a SQLite transaction open on a busy machine, and the run's last record was never
committed. At the next tick (at most a chunk's insert, ~0.1 s at 10,000 orders) the run
stops at a point where nothing is half done.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from harness import logs, retries
from harness import queue as rq_queue
from harness.config import Settings
from harness.errors import RunFailed
from harness.lock import LockHolder, RunLock
from harness.logs import event
from harness.orders import NORMAL, VIP
from harness.sampling import RunSampler
from harness.state import ATTEMPTS_KEY, CancelRequest, Phase, RunState
from harness.worker import run_pool_for

log = logging.getLogger("harness")
LOCK_REFRESH_S = 5.0
# The record is saved this often while a run goes: what a resume starts from, and a write
# that finds an unusable store within the store timeout.
CHECKPOINT_S = 0.5
# How often, while waiting on a drain, abandoned batches are looked for and due retries moved.
RETRY_CHECK_S = 0.2
# Nothing in flight, orders missing, no dead letter, for this long: a batch vanished with its
# worker (a live worker registers a job it took within milliseconds).
VANISHED_AFTER_S = 1.0
POOL_STOP_TIMEOUT_S = 30.0
# With no workers of its own, how often a run looks whether a worker took one of its jobs.
JOIN_CHECK_S = 0.2
REDIS_LOST = ("Redis lost this run's live state (restarted or flushed?); every order is safe "
              "in the store: `harness resume` finishes the run")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; it was recorded as ABORTED."""


class Cancelled(Exception):
    """`harness cancel` asked this run to stop; carries the cancel's request."""

    def __init__(self, request: CancelRequest) -> None:
        super().__init__(request.run_id)
        self.request = request


class NoWorkers(RunFailed):
    """A run with no workers of its own (``-c 0``) saw no worker take a job in time."""


class StateLost(RunFailed):
    """The run's live state in Redis is gone (Redis restarted or flushed)."""


@dataclass(frozen=True)
class Progress:
    """What a progress bar needs, sent by the coordinator as the run moves."""

    phase: Phase
    target: int
    generated: int
    processed: int
    # Seconds on the pipeline's clock (the record's total time at the last report), so that
    # a bar's rate is the summary's: processed / elapsed_s.
    elapsed_s: float | None = None

    @property
    def rate(self) -> float | None:
        """Rounded to 0.1/s as the record's overall rate is: formatted without decimals, an
        unrounded 17,234.54 read 17,235 where the summary's 17,234.5 read 17,234."""
        return round(self.processed / self.elapsed_s, 1) if self.elapsed_s else None


ProgressCallback = Callable[[Progress], None]


class Supervisor:
    """The run's lock, signals, checkpoints, progress and worker pool."""

    def __init__(
        self, settings: Settings, conn: Redis, me: LockHolder, epoch: int,
        checkpoint: Callable[[], None], requeue: Callable[[str], int],
        progress: ProgressCallback | None = None,
    ) -> None:
        """``checkpoint`` saves the record; ``requeue(priority)`` enqueues the pending
        orders of ``priority`` again and returns how many it found."""
        self.settings, self.conn, self.me, self.epoch = settings, conn, me, epoch
        self.state, self.lock = RunState(conn), RunLock(conn)
        self.checkpoint, self.requeue, self.progress = checkpoint, requeue, progress
        self.signal: str | None = None  # the stop signal received, if any
        self.stopping = False  # the run is ending: a signal now only waits for that
        self.pool: multiprocessing.process.BaseProcess | None = None
        self.sampler = RunSampler()  # memory and CPU of the run's processes
        self._last_refresh = self._last_log = self._last_checkpoint = 0.0
        self._last_retry_check = 0.0
        self._last_requeue_scan = float("-inf")
        self.t0 = time.perf_counter()
        self.pool_stop_s: float | None = None  # how long the pool took to stop, once it has
        # With no pool of its own: when the run's first job was enqueued, and whether a
        # worker (of this host or another) has started one of its jobs since.
        self.first_job_at: float | None = None
        self.worker_joined = False
        self._last_join_check = 0.0

    @property
    def run_id(self) -> str:
        return self.me.run_id

    # -- signals -------------------------------------------------------------------------

    def catch_signals(self) -> dict[int, Any]:
        """SIGINT and SIGTERM (Ctrl-C, `docker stop`) ask the run to stop at its next tick;
        returns the handlers to put back. A signal while the run is already ending waits
        for that to finish."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def interrupt(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.stopping or self.signal is not None:
                log.warning("%s received while stopping; finishing cleanly", name)
                return
            self.signal = name

        return {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}

    # -- the tick ------------------------------------------------------------------------

    def tick(self, phase: Phase, generated: int, report: bool = True) -> None:
        """Keep the lock alive, stop on a signal, a cancel or a lost state, checkpoint,
        report progress; called per chunk, page and poll."""
        if self.signal is not None:
            raise Interrupted(self.signal)
        now = time.monotonic()
        self.check_joined(now)
        if now - self._last_refresh > LOCK_REFRESH_S:
            if not self.lock.refresh(self.me):
                raise RunFailed("lost the run lock (Redis restarted or the run was taken over)")
            self._last_refresh = now
        ours, request = self.state.check(self.run_id, self.epoch)
        if not ours:
            raise StateLost(REDIS_LOST)
        if request is not None:
            raise Cancelled(request)
        if now - self._last_checkpoint >= CHECKPOINT_S:
            self.checkpoint_now()
        log_due = now - self._last_log >= self.settings.log_progress_every_ms / 1000
        if report and (self.progress is not None or log_due):
            self.report(phase, generated, log_due)

    def jobs_enqueued(self) -> None:
        """The coordinator enqueued jobs: from the first, joining workers are waited for."""
        if self.first_job_at is None:
            self.first_job_at = time.monotonic()

    def check_joined(self, now: float) -> None:
        """With no worker pool of its own, end the run (NoWorkers) when no worker has
        started any of its jobs within ``worker_wait_s`` of the first: every try of a job
        counts itself in the attempts hash as it starts, wherever its worker runs."""
        if self.pool is not None or self.worker_joined or self.first_job_at is None:
            return
        if now - self._last_join_check < JOIN_CHECK_S:
            return
        self._last_join_check = now
        if self.conn.hlen(ATTEMPTS_KEY):
            self.worker_joined = True
            log.info(event("worker-joined", run=self.run_id,
                           afterS=round(now - self.first_job_at, 3)))
            return
        wait = self.settings.worker_wait_s
        if now - self.first_job_at >= wait:
            raise NoWorkers(f"no worker joined in {wait:g} s: start `harness worker` with the "
                            "same REDIS_URL and store")

    @contextmanager
    def keeping_lock(self) -> Iterator[None]:
        """Refresh the lock from a thread while the run ends: stopping its work, stopping
        the pool and saving the record may take longer than the lock's TTL, and a lock that
        expired would let the next run start while this one still empties queues."""
        done = threading.Event()

        def refresh() -> None:
            while not done.wait(LOCK_REFRESH_S):
                try:
                    if not self.lock.refresh(self.me):
                        return
                except RedisError:
                    return

        keeper = threading.Thread(target=refresh, name="lock-keeper", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def checkpoint_now(self) -> None:
        self._last_checkpoint = time.monotonic()
        self.checkpoint()

    def report(self, phase: Phase, generated: int, log_line: bool = False,
               elapsed_s: float | None = None) -> None:
        """Send progress to the callback (and, if asked, a log line): also the last one,
        when the run has ended, so that a bar reaches 100 %; ``elapsed_s`` then is the
        record's total time, so the bar's last rate is the summary's."""
        processed = sum(int(n or 0) for n in self.state.get(f"processed:{VIP}",
                                                            f"processed:{NORMAL}"))
        elapsed = time.perf_counter() - self.t0 if elapsed_s is None else elapsed_s
        if self.progress is not None:
            self.progress(Progress(phase, self.settings.quantity, generated, processed, elapsed))
        if log_line:
            self._last_log = time.monotonic()
            log.info(event(
                "progress", run=self.run_id, phase=phase, generated=generated,
                processed=processed, target=self.settings.quantity,
                rate=round(processed / elapsed) if elapsed > 0 else None,
                rssMb=logs.rss_mb() if self.settings.log_memory else None))

    # -- batches -------------------------------------------------------------------------

    def wait_drain(self, priority: str, total: int, phase: Phase, generated: int) -> None:
        """Block until ``total`` orders of ``priority`` are processed, looking after batches
        that fail or lose their worker meanwhile."""
        stalled_since: float | None = None
        while self.state.processed(priority) < total:
            if self.pool is not None and not self.pool.is_alive():
                raise RunFailed("the worker pool exited before the queue drained")
            if time.monotonic() - self._last_retry_check >= RETRY_CHECK_S:
                self._last_retry_check = time.monotonic()
                stalled_since = self.look_after_batches(priority, total, stalled_since)
            self.tick(phase, generated)
            time.sleep(0.02)

    def look_after_batches(self, priority: str, total: int, stalled_since: float | None) -> float | None:
        """Retry batches whose worker died and those whose backoff is over. When nothing is
        in flight but orders are missing: with no dead letter, the missing orders were in a
        batch that vanished with its worker (see :mod:`harness.retries`), so the pending
        ones are enqueued again; with dead letters, `harness retry-failed` has
        ``stuck_after_s`` to step in before the run ends ERROR."""
        retries.reap_abandoned(self.conn)
        retries.enqueue_due(self.conn)
        if retries.in_flight(self.conn):
            return None
        now = time.monotonic()
        dead = retries.dead_letter_count(self.conn)
        if (not dead and stalled_since is not None and now - stalled_since >= VANISHED_AFTER_S
                and now - self._last_requeue_scan >= VANISHED_AFTER_S):
            # At most one scan a VANISHED_AFTER_S: one that finds nothing reads every order
            # (0.15 s at 1M on SQLite), and a stall can last stuck_after_s.
            self._last_requeue_scan = now
            missing = total - self.state.processed(priority)
            if found := self.requeue(priority):
                log.warning(event("vanished-batch", run=self.run_id, priority=priority,
                                  missing=missing, jobs=found,
                                  action="pending orders in no queue or registry enqueued again"))
                return None
        if stalled_since is None:
            if dead:
                log.warning(event(
                    "dead-letters", run=self.run_id, batches=dead,
                    error=rq_queue.last_failure(self.conn),
                    action=f"`harness retry-failed` requeues them; the run fails in "
                           f"{self.settings.stuck_after_s:g}s otherwise"))
            return now
        if now - stalled_since < self.settings.stuck_after_s:
            return stalled_since
        missing = total - self.state.processed(priority)
        if dead:
            raise RunFailed(
                f"{dead} batch(es) failed {self.settings.job_retries + 1} time(s) and were "
                f"dead-lettered (last error: {rq_queue.last_failure(self.conn)}); {missing:,} "
                f"{priority} order(s) stay pendente: fix the cause, then `harness resume`")
        raise RunFailed(f"{missing:,} {priority} order(s) are unaccounted for: no batch is queued, "
                        "running or dead-lettered; `harness resume` enqueues pending orders again")

    # -- the worker pool -----------------------------------------------------------------

    def start_pool(self) -> None:
        """Fork the run's workers (before this process opens its store, so no connection
        crosses a fork); they die with this process."""
        self.pool = multiprocessing.get_context("fork").Process(
            target=run_pool_for, args=(os.getpid(), self.settings), name="harness-workers")
        self.pool.start()
        self.sampler.watch_pool(self.pool.pid)

    def stop_pool(self) -> None:
        """Warm-stop the pool: running batches finish, then the workers exit."""
        if self.pool is None or not self.pool.is_alive():
            return
        self.sampler.sample(relist=True)  # the workers' last figures, before they go
        started = time.perf_counter()
        self.pool.terminate()  # SIGTERM: WorkerPool asks its workers to stop
        self.pool.join(POOL_STOP_TIMEOUT_S)
        if self.pool.is_alive():
            log.warning("worker pool did not stop within %ss; killing it", POOL_STOP_TIMEOUT_S)
            self.pool.kill()
            self.pool.join()
        self.pool_stop_s = time.perf_counter() - started
