"""Controlling runs from outside: cancel, reset, retry-failed, health, and the queue
controls that a run in progress forbids.

These are the original service's /pedidos/cancel, /reset, /health/queue, /queue/clean and
/queue/close. The refusals live here, not in a front end, so that the CLI and the HTTP API
(and a notebook) refuse the same things with the same words. A cancel is
cooperative: it leaves a request in Redis that the coordinator and every worker read, so
nothing is interrupted half way and nothing already processed is rolled back. Only when a
run's coordinator is gone does the caller finish the run itself
(:func:`harness.takeover.abandon`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from harness import history, retries
from harness import queue as rq_queue
from harness.codec import to_json
from harness.config import Settings
from harness.connection import connect_redis
from harness.errors import NoActiveRun, RunActive
from harness.lock import LockHolder, RunLock
from harness.logs import clear_lines, event, truncate_log
from harness.record import RunRecord
from harness.state import CancelRequest, Phase, RunState
from harness.status import snapshot
from harness.store import open_store
from harness.takeover import stop, take_lock

log = logging.getLogger("harness")
POLL_S = 0.02
# Exit codes of `harness health`, for scripts; 2 stays "bad command line" as everywhere.
HEALTH_EXIT = {"healthy": 0, "error": 1, "degraded": 3, "paused": 4, "aborted": 5}
# Exit code of `harness cancel` when the run ended DONE (or ERROR) before the cancel took
# effect: not an error, and not a cancel either.
CANCEL_TOO_LATE_EXIT = 3


@dataclass(frozen=True)
class CloseResult:
    """What a close did: worker pools registered before, and those still registered after."""

    before: int
    left: int

    @property
    def stopped(self) -> int:
        return self.before - self.left


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did, as the run's record says: ``cancelled`` only when the record ends
    ABORTED. ``outcome`` is the phase the record ended in; ``too_late`` when it ended DONE
    or ERROR before the cancel took effect (a run in its last moments finishes anyway).
    ``request`` is the request in effect for the run: this call's, or an earlier one's
    (``won`` False), whose options then decided what happened to the run's queued jobs and
    pending orders. ``record`` is the run's record as it ended."""

    cancelled: bool
    run_id: str | None
    message: str
    elapsed_ms: float = 0.0
    record: RunRecord | None = None
    request: CancelRequest | None = None
    won: bool = True
    outcome: str | None = None
    too_late: bool = False

    def to_json(self) -> dict[str, Any]:
        """What `harness cancel --json` prints and ``POST /pedidos/cancel`` answers."""
        return {"cancelled": self.cancelled, "runId": self.run_id, "message": self.message,
                "outcome": self.outcome, "tooLate": self.too_late,
                "elapsedMs": self.elapsed_ms, "won": self.won,
                "request": to_json(self.request) if self.request else None,
                "record": self.record.to_json() if self.record else None}


def cancel(
    settings: Settings, purge: bool = True, remove_pending: bool = True,
    reset_metrics: bool = False, conn: Redis | None = None, reset_logs: bool = False,
) -> CancelResult:
    """Cancel the active run and wait until it is recorded ABORTED.

    Defaults are the original's: purge queued jobs, remove pending orders, keep metrics and
    logs. The queues are paused meanwhile so that idle workers take nothing new, then
    restored. ``reset_logs`` empties the log file and the lines kept in Redis once the run
    has stopped (the original's ``resetLogs``), whether or not a run was active. Of two
    cancels of one run, the first one's options win; the second says so.
    """
    conn = conn or connect_redis(settings, autostart=False)
    result = _cancel(settings, purge, remove_pending, reset_metrics, conn)
    if reset_logs:
        truncate_log(settings)
        clear_lines(conn)
    return result


def _cancel(
    settings: Settings, purge: bool, remove_pending: bool, reset_metrics: bool,
    conn: Redis | None,
) -> CancelResult:
    conn = conn or connect_redis(settings, autostart=False)
    holder = RunLock(conn).holder()
    if holder is None:
        return CancelResult(False, None, "no run is active; nothing changed")
    if not holder.is_run:
        return CancelResult(False, None, f"no run is active ({holder.run_id.split('-')[0]} holds "
                            f"the lock, pid {holder.pid}, briefly); nothing changed")
    t0 = time.perf_counter()
    mine = CancelRequest(holder.run_id, purge=purge, remove_pending=remove_pending,
                         reset_metrics=reset_metrics)
    log.info(event("cancel-requested", run=holder.run_id, purge=purge,
                   removePending=remove_pending, resetMetrics=reset_metrics))
    was_paused = rq_queue.is_paused(conn)
    rq_queue.pause(conn)
    try:
        if purge:  # queued jobs only; the coordinator clears finished ones once all stopped
            rq_queue.empty(conn)
        request = stop(settings, conn, holder, mine)
    finally:
        if not was_paused:
            rq_queue.resume(conn)
    record = history.get_run(settings, holder.run_id)  # a record put aside is saved first
    elapsed = round((time.perf_counter() - t0) * 1000, 1)
    won = request == mine
    return _answer(holder.run_id, record, elapsed, request, won)


def _answer(run_id: str, record: RunRecord | None, elapsed: float, request: CancelRequest,
            won: bool) -> CancelResult:
    """What a cancel says, from the record the run ended with: a run that finished DONE (or
    ERROR) while the cancel was on its way was not cancelled, and the answer says so (it
    used to say "cancelled" while the record said DONE)."""
    outcome = record.phase if record is not None else None
    if outcome == Phase.ABORTED:
        message = f"run {run_id} cancelled"
        if not won:
            message += (f" by an earlier request (purge={request.purge}, removePending="
                        f"{request.remove_pending}, resetMetrics={request.reset_metrics}), "
                        "whose options applied; this request's did not")
        return CancelResult(True, run_id, message, elapsed, record, request, won, outcome)
    if record is not None and outcome in (Phase.DONE, Phase.ERROR):
        how = "finished DONE" if outcome == Phase.DONE else f"ended ERROR ({record.error})"
        return CancelResult(False, run_id, f"too late: run {run_id} {how} before the cancel "
                            "took effect; nothing was cancelled", elapsed, record, request,
                            won, outcome, too_late=True)
    return CancelResult(False, run_id, f"run {run_id} stopped, but its record says "
                        f"{outcome or 'nothing (no record)'}; `harness runs` shows it once "
                        "the store has it", elapsed, record, request, won, outcome)


def retry_failed(settings: Settings, conn: Redis | None = None) -> int:
    """Requeue the active run's dead-lettered batches, each with a fresh set of tries; return
    how many. A run that has ended is finished with `harness resume` instead, which enqueues
    every pending order again, dead-lettered or not."""
    conn = conn or connect_redis(settings, autostart=False)
    dead = retries.dead_letter_count(conn)
    if not dead:
        return 0
    holder = RunLock(conn).holder()
    if holder is None or not holder.is_run or holder.is_dead():
        raise NoActiveRun(
            f"{dead} dead-lettered batch(es) belong to a run that is no longer active; "
            "`harness resume` finishes it, enqueueing every pending order again")
    requeued = retries.retry_failed(conn, settings.retry_intervals)
    log.warning(event("retry-failed", run=holder.run_id, requeued=requeued))
    return requeued


def reset(settings: Settings, all_runs: bool = False, force: bool = False) -> dict[str, int]:
    """Remove orders, queued jobs, metrics and live state; run history too with ``all_runs``.

    Refused while a run is active, unless ``force``, which cancels it first.
    """
    conn = connect_redis(settings, autostart=False)
    state = RunState(conn)
    holder = RunLock(conn).holder()
    if holder is not None:
        if not force:
            raise RunActive(
                f"run {holder.run_id} is active; cancel it first, or `harness reset --force`",
                holder,
            )
        cancel(settings, conn=conn)
    me = LockHolder.mine(f"reset-{int(time.time())}")  # see MAINTENANCE_HOLDERS
    take_lock(settings, conn, me)  # no run may start while we clear
    try:
        if running := rq_queue.running_count(conn):
            raise RunActive(f"{running} job(s) are still running; stop their workers first")
        jobs = sum(rq_queue.clean(conn, s) for s in rq_queue.STATES if s != "active")
        rq_queue.resume(conn)  # paused queues would stall the next run
        state.clear()
        store = open_store(settings)
        try:
            orders = store.count_orders()
            store.claim(me.run_id)  # a paused coordinator waking up later writes nothing
            store.clear_orders()
            runs = len(store.list_runs()) if all_runs else 0
            if all_runs:
                store.clear_runs()
        finally:
            store.close()
    finally:
        RunLock(conn).release(me)
    log.warning(event("reset", orders=orders, jobs=jobs, runs=runs))
    return {"orders": orders, "jobs": jobs, "runs": runs}


def clean_queue(conn: Redis, state: str, force: bool = False) -> int:
    """Delete every job in ``state`` (a name of ``queue.STATES`` or a BullMQ alias such as
    ``wait`` or ``delayed``, or ``all``: every state but active) from both queues; return how
    many went. Waiting jobs are the active run's work: refused while one runs, unless
    ``force``."""
    states = ([s for s in rq_queue.STATES if s != "active"] if state == "all"
              else rq_queue.resolve_states([state]))
    if "waiting" in states and not force and (holder := RunLock(conn).holder()):
        raise RunActive(f"run {holder.run_id} is active and needs its waiting jobs; "
                        "use `harness cancel`, or --force", holder)
    return sum(rq_queue.clean(conn, s) for s in states)


def close_workers(conn: Redis, timeout: float = 15.0, poll: float = 0.1) -> CloseResult:
    """Ask every harness worker pool to stop its workers and exit (running batches finish),
    and wait up to ``timeout`` seconds for them to unregister. Refused while a run is active:
    its workers are its own and it would wait for them for ever."""
    if holder := RunLock(conn).holder():
        raise RunActive(f"run {holder.run_id} is active; `harness cancel` it first", holder)
    before = rq_queue.worker_count(conn)
    rq_queue.request_close(conn)
    deadline = time.monotonic() + timeout
    while (left := rq_queue.worker_count(conn)) and time.monotonic() < deadline:
        time.sleep(poll)
    return CloseResult(before, left)


@dataclass(frozen=True)
class HealthFacts:
    """What health is judged on, read from Redis in :func:`health`."""

    phase: str
    error: str | None
    paused: bool
    dead_coordinator: str | None  # its run id, when the lock's holder provably died
    failed_jobs: int
    stuck_for_s: float | None  # seconds without progress with work pending, if stuck


def classify(facts: HealthFacts) -> tuple[str, list[str]]:
    """The classification and its reasons: ``error`` when the last run failed or its
    coordinator died; ``paused`` when workers are suspended; ``aborted`` when the last run
    was cancelled or interrupted; ``degraded`` with dead-lettered batches or a run stuck;
    else ``healthy``. The first that applies wins; every reason is listed."""
    reasons = []
    if facts.phase == Phase.ERROR:
        reasons.append(f"last run failed: {facts.error}")
    if facts.dead_coordinator is not None:
        reasons.append(f"coordinator of run {facts.dead_coordinator} died "
                       "(`harness resume` finishes the run)")
    if facts.paused:
        reasons.append("queues paused")
    if facts.phase == Phase.ABORTED:
        reasons.append(f"last run aborted: {facts.error}")
    if facts.failed_jobs:
        reasons.append(f"{facts.failed_jobs} dead-lettered batch(es) (`harness retry-failed` "
                       "requeues them while the run waits)")
    if facts.stuck_for_s is not None:
        reasons.append(f"no progress for {facts.stuck_for_s}s with work pending")
    if facts.phase == Phase.ERROR or facts.dead_coordinator is not None:
        return "error", reasons
    if facts.paused:
        return "paused", reasons
    if facts.phase == Phase.ABORTED:
        return "aborted", reasons
    if facts.failed_jobs or facts.stuck_for_s is not None:
        return "degraded", reasons
    return "healthy", reasons


def health(settings: Settings, conn: Redis | None = None) -> dict[str, Any]:
    """Queue counts, run phase and heuristics, and one classification (:func:`classify`)
    with its reasons; ``isStuck`` means work pending and no progress for ``stuck_after_s``."""
    conn = conn or connect_redis(settings, autostart=False)
    state = RunState(conn)
    fields = state.read()
    now = time.time()
    doc = snapshot(fields, now)
    counts = rq_queue.counts(conn)
    total = counts["total"]
    phase, active = doc["phase"], doc["isProcessing"]
    paused = rq_queue.is_paused(conn)
    holder = RunLock(conn).holder()
    last_progress = max((float(fields[k]) for k in ("progressAt", "end:VIP", "end:NORMAL")
                         if fields.get(k)), default=None)
    pending = total["waiting"] + total["active"] > 0 or (
        doc["progress"]["processedTotal"] < doc["progress"]["generated"])
    idle_s = round(now - last_progress, 1) if last_progress is not None else None
    stuck = bool(active and not paused and pending and idle_s is not None
                 and idle_s > settings.stuck_after_s)
    status, reasons = classify(HealthFacts(
        phase=phase, error=doc["error"], paused=paused,
        dead_coordinator=holder.run_id if holder and holder.is_dead() else None,
        failed_jobs=total["failed"], stuck_for_s=idle_s if stuck else None))
    return {
        "status": status,
        "reasons": reasons,
        "phase": phase,
        "runId": doc["lastRunId"],
        "isProcessing": active,
        "aborting": active and state.abort_request(doc["lastRunId"] or "") is not None,
        "aborted": phase == Phase.ABORTED,
        "paused": paused,
        "hasFailedJobs": total["failed"] > 0,
        "deadLetters": retries.dead_letters(conn, limit=10) if total["failed"] else [],
        "isStuck": stuck,
        "secondsSinceProgress": idle_s,
        # The original's counters, "delayed" (BullMQ's name) being deferred plus scheduled.
        "queue": {**{k: total[k] for k in ("waiting", "active", "completed", "failed", "deferred")},
                  "delayed": total["deferred"] + total["scheduled"]},
        "queues": counts,
        "workers": rq_queue.worker_count(conn),
        "coordinator": str(holder) if holder else None,
    }
