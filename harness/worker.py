"""The job body (process one batch of orders) and the pool of workers that runs it.

Workers are RQ ``SimpleWorker``s (no fork per job: ~5 ms per job instead of ~25 ms) in a
``WorkerPool``. A worker opens the store once per process and reuses it for every job. Run
parameters that shape the work (simulated work per order) come from the run's live state
in Redis, so a worker started on another host with ``harness worker`` does what the run
asked; where the store is comes from the worker's own settings, so no secret travels
through Redis.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import socket
import time

from rq import get_current_job
from rq.worker import SimpleWorker
from rq.worker_pool import WorkerPool

from harness.config import Settings
from harness.connection import connect_redis
from harness.queue import LISTEN_ORDER
from harness.state import RunState
from harness.store import Store, open_store

log = logging.getLogger("harness.worker")
PR_SET_PDEATHSIG = 1

_settings: Settings | None = None
_store: Store | None = None
_store_pid: int | None = None


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


def process_batch(run_id: str, priority: str, seqs: list[int]) -> int:
    """Process one batch: mark each order processed, then count the batch in Redis.

    Returns how many orders this job moved from pendente to processado. A job from a run
    that is no longer current does nothing.
    """
    job = get_current_job()
    assert job is not None, "process_batch runs inside an RQ worker"
    state = RunState(job.connection)
    current, work_ms = state.get("runId", "workMs")
    if current != run_id:
        log.info("skipping a %s batch of run %s (current run: %s)", priority, run_id, current)
        return 0
    work = float(work_ms or 0) / 1000
    clock, sleep = time.time, time.sleep
    done = []
    for seq in seqs:
        start = clock()
        if work:
            sleep(work)
        done.append((seq, start, clock()))
    moved = _process_store().mark_processed(priority, done, worker_name())
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state.record_batch(run_id, priority, moved, done[0][1], done[-1][2], worker_name(), rss_kb)
    return moved


def run_pool(settings: Settings, burst: bool = False, logging_level: str = "WARNING") -> None:
    """Run ``settings.concurrency`` workers until SIGINT/SIGTERM (or, with burst, idle)."""
    # A pool forked by `harness run` inherits the coordinator's signal handlers; WorkerPool
    # installs its own, and until then a signal must act as it would on a fresh process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure(settings)
    for name in ("rq", "rq.worker"):  # RQ logs every worker start at INFO
        logging.getLogger(name).setLevel(logging_level)
    conn = connect_redis(settings, autostart=False)  # a worker never brings its own Redis
    pool = WorkerPool(
        LISTEN_ORDER, connection=conn, num_workers=settings.concurrency,
        worker_class=SimpleWorker,
    )
    pool.start(burst=burst, logging_level=logging_level)


def run_pool_for(parent_pid: int, settings: Settings) -> None:
    """The pool a run starts: like :func:`run_pool`, but it stops when ``parent_pid`` dies.

    Without this, a coordinator killed outright (SIGKILL, OOM) would leave its workers
    running, with that run's settings, taking the next run's jobs.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # Linux: SIGTERM us when the parent dies
    except (OSError, AttributeError):
        log.warning("cannot tie the worker pool to its coordinator on this platform")
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    run_pool(settings)
