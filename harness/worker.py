"""The job body (process one batch of orders) and the pool of workers that runs it.

Workers are RQ ``SimpleWorker``s (no fork per job: ~5 ms per job instead of ~25 ms) in a
``WorkerPool``. A worker opens the store once per process and reuses it for every job. Run
parameters that shape the work (simulated work per order) come from the run's live state
in Redis, so a worker started on another host with ``harness worker`` does what the run
asked; where the store is comes from the worker's own settings, so no secret travels
through Redis.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import time
from typing import Any

from redis.exceptions import RedisError
from rq import get_current_job
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.logutils import setup_loghandlers
from rq.worker_pool import WorkerPool

from harness.config import Settings
from harness.connection import Timed, connect_redis
from harness.errors import StaleRun
from harness.listener import StoppingWorker
from harness.orders import PENDING, PROCESSED
from harness.queue import LISTEN_ORDER, Seqs, close_requested_since
from harness.quiet import EXPECTED, STOPS_A_POOL, QuietWorker, describe, install
from harness.state import RunState
from harness.store import Fence, Store, open_store

log = logging.getLogger("harness.worker")
PR_SET_PDEATHSIG = 1
# With simulated work, a batch commits what it has done and checks for a cancel this often,
# so a cancel stops it within about this long. Without simulated work a whole batch takes a
# few milliseconds and is one group.
ABORT_CHECK_S = 0.05
# How often a stopping pool looks whether its workers have exited.
STOP_POLL_S = 0.02

_settings: Settings | None = None
_store: Store | None = None
_store_pid: int | None = None
_pool_pid: int | None = None  # the pool process, which forks the workers


def configure(settings: Settings) -> None:
    """Settings for the workers this process will fork (``harness run`` passes its own)."""
    global _settings
    _settings = settings


def _process_store() -> Store:
    """This process's store connection, opened on first use (never across a fork)."""
    global _store, _store_pid, _settings
    if _store is None or _store_pid != os.getpid():
        if _settings is None:
            _settings = Settings.from_env()
        _store, _store_pid = open_store(_settings), os.getpid()
    return _store


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_batch(run_id: str, priority: str, seqs: list[int] | Seqs, epoch: int = 0) -> int:
    """Process one batch: mark its orders processed, then count them in Redis.

    Returns how many orders this try moved from pendente to processado. A job from a run
    (or a run's epoch: a resume starts a new one) that is no longer current, or that was
    cancelled, does nothing; a cancel arriving while it runs stops it after its current
    group, whose orders stay processed and counted.

    A retry (its worker died, or it raised) first reads which of its orders an earlier try
    already processed: it skips them, and counts any that try committed but did not live
    to count. So every order is processed once and counted once, however often the batch
    runs.
    """
    job = get_current_job()
    assert job is not None, "process_batch runs inside an RQ worker"
    todo = list(seqs)  # packed by the coordinator (harness.queue.Seqs), or a plain list
    state = RunState(job.connection)
    ctx = state.job_context(run_id, epoch, job.id)
    if not ctx.current or ctx.cancelled:
        log.info("skipping a %s batch of run %s (still current: %s, cancelled: %s)",
                 priority, run_id, ctx.current, ctx.cancelled)
        return 0
    _process_store().bind(Fence(run_id, epoch))  # a write after another run claimed the store fails
    batch = _Batch(state, run_id, epoch, priority, job.id, ctx.attempt, todo)
    if ctx.attempt > 1:
        docs = _process_store().get_orders(todo)
        batch.done_in_job = batch.processed_here(docs)
        todo = [d["seq"] for d in docs if d["status"] == PENDING]
        log.warning("try %d of a %s batch of run %s: %d order(s) already processed, %d left",
                    ctx.attempt, priority, run_id, batch.done_in_job, len(todo))
    try:
        return _work(batch, todo, ctx.work_ms)
    except StaleRun as exc:  # this job's run no longer owns the store: nothing to retry
        log.warning("%s batch of run %s stopped: %s", priority, run_id, exc)
        return batch.moved


def _work(batch: _Batch, seqs: list[int], work_ms: float) -> int:
    """Process ``seqs``, committing (and checking for a cancel) every ABORT_CHECK_S of
    simulated work; return how many orders this try moved."""
    state, run_id, epoch, priority = batch.state, batch.run_id, batch.epoch, batch.priority
    work = work_ms / 1000
    clock, sleep = time.time, time.sleep
    done = list[tuple[int, float, float]]()
    last_check = clock()
    last = len(seqs) - 1
    for i, seq in enumerate(seqs):
        start = clock()
        if work:
            sleep(work)
        done.append((seq, start, clock()))
        if work and done[-1][2] - last_check >= ABORT_CHECK_S and i < last:
            batch.commit(done)
            done = []
            ctx = state.job_context(run_id, epoch)
            if not ctx.current or ctx.cancelled:
                log.info("%s batch of run %s stopped by a cancel after %d orders",
                         priority, run_id, batch.moved)
                return batch.moved
            last_check = clock()
    batch.commit(done, last=True)
    return batch.moved


class _Batch:
    """One try of a batch job, committing its orders group by group."""

    def __init__(self, state: RunState, run_id: str, epoch: int, priority: str, job_id: str,
                 attempt: int, seqs: list[int]) -> None:
        self.state, self.run_id, self.epoch = state, run_id, epoch
        self.priority, self.job_id, self.attempt = priority, job_id, attempt
        self.seqs = seqs  # every order of the job
        self.moved = 0  # by this try
        self.done_in_job = 0  # processed in the store, over every try

    def processed_here(self, docs: list[dict[str, Any]]) -> int:
        """How many of ``docs`` (this job's orders, read from the store) this job processed,
        in any of its tries: each order keeps the job that moved it."""
        return sum(d["status"] == PROCESSED and d.get("job") == self.job_id for d in docs)

    def commit(self, done: list[tuple[int, float, float]], last: bool = False) -> None:
        """Store a group of processed orders, then count them: counters follow the store.

        A try that moved nothing still reports, so that it counts what an earlier try
        committed and never counted. A retry counts the orders of its job that the store
        says this job processed (one read of at most a job's orders): another try of the
        same job may be running at the same time, here or on another host (a worker RQ
        believed dead, a job requeued from RQ's intermediate list), and a running sum of its
        own would then undercount; and orders of the job that another job processed (its
        batch enqueued again when it seemed to have vanished) are that job's to count, so
        nothing is counted twice. ``last``: the try's last report, which also counts a batch
        done for its worker (what `harness status` lists per worker).
        """
        store = _process_store()
        moved = (store.mark_processed(self.priority, done, worker_name(), self.attempt, self.job_id)
                 if done else 0)
        self.moved += moved
        if self.attempt > 1:
            self.done_in_job = self.processed_here(store.get_orders(self.seqs))
        else:
            self.done_in_job += moved
        window = (done[0][1], done[-1][2]) if moved else None
        self.state.record_batch(self.run_id, self.epoch, self.priority, self.job_id,
                                self.done_in_job, window, worker_name() if last else None)


class HarnessPool(WorkerPool):
    """RQ's pool, which also stops when `harness queue close` asks pools to, and stops
    without waiting out its one-second loop.

    RQ's ``start`` sleeps a whole second between looks, also while it waits for its workers
    to exit: measured, stopping the pool took 1.01 s of the 1.2 s a 1,000-order run took
    from start to exit. Here the loop looks every 20 ms whether it was asked to stop.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._born = time.time()
        self._redis_down = False
        global _pool_pid
        _pool_pid = os.getpid()

    def start_worker(self, *args: Any, **kwargs: Any) -> None:
        """Fork a worker with stop signals held: it inherits the mask, so a stop arriving
        while it starts (even before its class is built) waits for RQ's loop instead of
        being a KeyboardInterrupt traceback."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().start_worker(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


    def start(self, burst: bool = False, logging_level: str = "INFO") -> None:
        """RQ's loop (rq.worker_pool.WorkerPool.start), with the waits above."""
        self._burst = burst
        setup_loghandlers(logging_level, DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT,
                          name="rq.worker_pool")
        self.status = self.Status.STARTED
        self.start_workers(burst=burst, logging_level=logging_level)
        self._install_signal_handlers()
        while True:
            if self.status == self.Status.STOPPED:
                if self.all_workers_have_stopped():
                    return
                time.sleep(STOP_POLL_S)
                continue
            self.check_workers(respawn=not burst)
            if burst and self.number_of_active_workers == 0:
                return
            # RQ's one-second pause, in short steps that a stop request (a signal handler
            # setting the status: nothing that takes a lock) ends at once.
            for _ in range(int(1 / STOP_POLL_S)):
                if self.status == self.Status.STOPPED:
                    break
                time.sleep(STOP_POLL_S)

    def reap_dead_workers_jobs(self) -> None:
        """Hand RQ back the jobs of this host's workers that died (SIGKILL, OOM) with a job
        started: a coordinator on another host cannot prove them dead and would wait for
        RQ's job timeout (minutes), but a pool on their host can. So a fresh `harness
        worker` started where workers were killed gets their batches retried at once (each
        retry counts only what its job processed: nothing twice). About once a second, as
        the pool looks after its own workers."""
        from harness.retries import reap_abandoned

        reap_abandoned(self.connection)

    def check_workers(self, respawn: bool = True) -> None:
        try:
            if self.status != self.Status.STOPPED and close_requested_since(self.connection, self._born):
                log.warning("`harness queue close` asked this pool to stop")
                self.request_stop()
                return
            super().check_workers(respawn)
            self.reap_dead_workers_jobs()
        except EXPECTED as exc:  # Redis away: one line, no respawning until it is back
            if not self._redis_down:
                log.warning("worker pool: Redis unreachable, waiting for it: %s", describe(exc))
            self._redis_down = True
            return
        if self._redis_down:
            log.warning("worker pool: Redis answers again")
            self._redis_down = False


def run_pool(settings: Settings, burst: bool = False, logging_level: str = "WARNING") -> None:
    """Run ``settings.concurrency`` workers until SIGINT/SIGTERM (or, with burst, idle)."""
    # A pool forked by `harness run` inherits the coordinator's signal handlers; WorkerPool
    # installs its own, and until then a signal must act as it would on a fresh process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure(settings)
    for name in ("rq", "rq.worker"):  # RQ logs every worker start at INFO
        logging.getLogger(name).setLevel(logging_level)
    install("rq.worker", "rq.worker_pool")  # expected failures: one line, not a traceback
    conn = connect_redis(settings, autostart=False)  # a worker never brings its own Redis
    pool = HarnessPool(
        LISTEN_ORDER, connection=conn, num_workers=settings.concurrency,
        worker_class=HarnessWorker,
    )
    pool.start(burst=burst, logging_level=logging_level)


def run_pool_for(parent_pid: int, settings: Settings) -> None:
    """The pool a run starts: like :func:`run_pool`, but it stops when ``parent_pid`` dies.

    Without this, a coordinator killed outright (SIGKILL, OOM) would leave its workers
    running, with that run's settings, taking the next run's jobs.
    """
    if not tie_to_parent(parent_pid):
        return
    # Everything inherited from the coordinator (a notebook kernel: pandas, matplotlib, the
    # user's data) goes to the permanent generation, so the workers' garbage collections
    # never write to those pages and copy them: a worker's private memory (USS) measured
    # 10.1 MB from the CLI, and 16.3 MB (41.3 MB with a million objects in the parent)
    # from a fatter parent without this; 11.4 and 11.9 MB with it.
    gc.freeze()
    try:
        run_pool(settings)
    except KeyboardInterrupt:  # Ctrl-C reached the pool too: the run stops it anyway
        return
    except STOPS_A_POOL as exc:
        log.warning("worker pool stopped: %s", describe(exc))


def tie_to_parent(parent_pid: int, on_interrupt: Any = signal.default_int_handler) -> bool:
    """For a process forked from the coordinator: SIGTERM's default action back (it ends the
    process), SIGINT handled by ``on_interrupt`` (Python's own by default), then
    :func:`die_with_parent`; False if the parent is already gone.

    Why: the coordinator's handlers come with the fork, and its SIGTERM handler only sets a
    flag (the run stops at its next tick). A pool whose coordinator was killed before RQ
    installed its own handlers took the death signal as that flag and lived on with its
    workers (seen in CI: a coordinator killed 2,000 orders into its run left them running
    for the rest of the suite, holding the test's pipes)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, on_interrupt)
    return die_with_parent(parent_pid)


def die_with_parent(parent_pid: int) -> bool:
    """Have Linux send this process SIGTERM when its parent dies; False if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("cannot tie process %d to its parent on this platform", os.getpid())
    return os.getppid() == parent_pid  # else the parent died before prctl took effect


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class HarnessWorker(QuietWorker, StoppingWorker):
    """RQ's SimpleWorker (no fork per job) with a command channel that stops at once
    (:mod:`harness.listener`), tied to its pool: if the pool is killed
    outright, the worker gets SIGTERM (a warm stop) instead of living on as an orphan that
    still takes jobs.

    It also closes a gap in RQ 3's start-up: a worker registers itself, then installs its
    signal handlers; a stop signal in between killed it still registered (listed for minutes,
    counted by health and close). Stop signals are held until RQ's loop runs, where a
    pending one ends the worker the normal way.

    It runs no RQ scheduler: the coordinator moves retries that are due (see
    :mod:`harness.retries`). RQ forks its scheduler into a child that a killed worker would
    leave behind, holding the scheduler lock for a minute.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The pool's pid, not getppid(): a pool killed before this line would make the
        # orphan's check pass against its new parent, and it lived on, taking jobs.
        if not die_with_parent(_pool_pid or os.getppid()):
            raise SystemExit(0)
        super().__init__(*args, **kwargs)
        self._signals_held = False
        self._registered = False

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """RQ's, which registers the worker and then subscribes to its command channel, both
        before the block that unregisters it on the way out: a Redis error in between (a
        command timing out on a busy machine) ended the worker still registered, listed for
        minutes. Unregistered here instead, as far as Redis lets it."""
        try:
            super().bootstrap(*args, **kwargs)
        except BaseException:
            if self._registered:  # never another worker's entry: only after our own birth
                with contextlib.suppress(RedisError, OSError):
                    self.register_death()
                with contextlib.suppress(RedisError, OSError):
                    self.unsubscribe()
            raise

    def register_birth(self) -> None:
        super().register_birth()
        self._registered = True

    def _set_connection(self, connection: Any) -> Any:
        """Keep the harness's command timeout on a connection made by
        :func:`harness.connection.redis_client`. RQ raises the socket timeout of the whole
        connection above its BLPOP wait (to 415 s), so that any command to a frozen Redis
        (a heartbeat, a job's status) held a worker for 7 minutes; such a connection reads a
        blocking command's reply with that command's own wait instead."""
        if issubclass(connection.connection_pool.connection_class, Timed):
            return connection
        return super()._set_connection(connection)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._signals_held = True
        return bool(super().work(*args, **kwargs))

    def check_for_suspension(self, burst: bool) -> None:
        """The first thing RQ's loop does, inside the block that unregisters on the way out."""
        if self._signals_held:
            self._signals_held = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        super().check_for_suspension(burst)
