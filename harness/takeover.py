"""Taking the run lock, and what becomes of the run that held it.

Policy, in one place for every caller (a run, a resume, `harness reset`, `harness bench`,
`harness cancel`, the HTTP API):

- a holder that provably died (same host, no such process) is finished in its place,
  recorded ABORTED from what the store holds, and its lock taken over at once (left as it
  is when it is the run being resumed);
- a live holder is asked to stop (a cancel request) only with ``force``; else RunActive
  names it;
- a run whose lock expired while its coordinator was paused, not dead, is fenced out of
  the store by the next claim and its record closed as ABORTED by whoever claims next
  (:func:`close_orphan`), so that a paused process wakes up to find it can write nothing.
"""

from __future__ import annotations

import logging
import time

from redis import Redis

from harness import queue as rq_queue
from harness.config import Settings
from harness.errors import CancelTimeout, RunActive
from harness.lock import LockHolder, RunLock
from harness.logs import event
from harness.record import CancelInfo, Measured, RunRecord, finish, iso
from harness.state import ACTIVE_PHASES, CancelRequest, Phase, RunState
from harness.store import Fence, Store, open_store

log = logging.getLogger("harness")
POLL_S = 0.02


def take_lock(
    settings: Settings, conn: Redis, me: LockHolder, force: bool = False,
    resume_of: str | None = None,
) -> None:
    """Take the run lock for ``me``, applying the policy above."""
    lock = RunLock(conn)
    for _ in range(3):
        try:
            lock.acquire(me)
            return
        except RunActive as exc:
            holder = exc.holder
            if holder is None:  # freed between our SET and GET: try again
                continue
            if holder.is_dead() and holder.run_id == resume_of:
                log.warning(event("stale-lock", run=holder.run_id,
                                  coordinator=f"{holder.host}:{holder.pid}",
                                  action="resuming: its coordinator died"))
                lock.release(holder)
            elif holder.is_dead():
                log.warning(event("stale-lock", run=holder.run_id,
                                  coordinator=f"{holder.host}:{holder.pid}",
                                  action="taking over: its coordinator died"))
                abandon(settings, conn, holder, "its coordinator died",
                        CancelRequest(holder.run_id, purge=True, remove_pending=False))
            elif force and holder.is_run:
                log.warning(event("force", run=holder.run_id, action="cancelling it first"))
                stop(settings, conn, holder,
                     CancelRequest(holder.run_id, purge=True, remove_pending=False))
            else:
                raise
    lock.acquire(me)


def stop(settings: Settings, conn: Redis, holder: LockHolder, request: CancelRequest) -> CancelRequest:
    """Ask ``holder``'s run to stop as ``request`` says and wait until it has recorded itself
    (its coordinator frees the lock); finish it in its coordinator's place when that
    coordinator is dead or never answers. Returns the request in effect: an earlier one
    for the same run wins."""
    state, lock = RunState(conn), RunLock(conn)
    request = state.request_abort(request)
    if holder.is_dead():
        abandon(settings, conn, holder, "cancelled after its coordinator died", request)
        return request
    # The coordinator waits up to cancel_timeout_s for running batches, then records.
    deadline = time.monotonic() + settings.cancel_timeout_s + 10
    while lock.holder() == holder:
        if time.monotonic() > deadline:
            raise CancelTimeout(
                f"run {holder.run_id} did not stop within {settings.cancel_timeout_s + 10:.0f}s; "
                f"its coordinator {holder.host}:{holder.pid} may be hung or on another host "
                "(`harness reset --force` takes over once its lock expires)")
        time.sleep(POLL_S)
    fields = state.read()
    if fields.get("runId") == holder.run_id and fields.get("phase") in ACTIVE_PHASES:
        # The lock expired under a coordinator that never answered: finish for it.
        abandon(settings, conn, holder, "cancelled; its coordinator did not answer", request)
    return request


def abandon(settings: Settings, conn: Redis, holder: LockHolder, reason: str,
            request: CancelRequest) -> None:
    """Finish, in its coordinator's place, a run whose coordinator is gone: purge, wait for
    running batches (workers elsewhere may still hold some), fence the old coordinator out
    of the store, record the run ABORTED, free its lock."""
    state = RunState(conn)
    request = state.request_abort(request)
    if request.purge:
        rq_queue.purge(conn)
    rq_queue.wait_idle(conn, settings.cancel_timeout_s, POLL_S)
    fields = state.read()
    active = fields.get("runId") == holder.run_id and fields.get("phase") in ACTIVE_PHASES
    store = open_store(settings)
    try:
        store.claim(holder.run_id)  # its old coordinator and workers can write nothing more
        removed = store.delete_pending() if request.remove_pending else 0
        record = store.get_run(holder.run_id)
        if record is None and fields.get("runId") == holder.run_id:  # died before its first save
            record = RunRecord(run_id=holder.run_id, phase=fields.get("phase") or Phase.GENERATING,
                               started_at=iso(float(fields.get("startedAt") or time.time())))
        if record is not None and record.phase in ACTIVE_PHASES:
            cancel = CancelInfo(
                run_id=request.run_id, purge=request.purge, remove_pending=request.remove_pending,
                reset_metrics=request.reset_metrics, requested_at=iso(request.requested_at),
                phase=record.phase, removed_pending=removed, by_coordinator=False)
            finish(record, Phase.ABORTED, reason, measure_stored(store), cancel=cancel)
            store.close_run(record)
    finally:
        store.close()
    if active:
        state.set(phase=Phase.ABORTED, error=reason, finishedAt=time.time())
    if request.reset_metrics:
        state.clear()
    RunLock(conn).release(holder)
    log.warning(event("aborted", run=holder.run_id, reason=reason, removedPending=removed))


def measure_stored(store: Store) -> Measured:
    """What the store says about the run it holds: windows and per-priority counts."""
    return Measured(windows=store.windows(), tally=store.tally())


def close_orphan(store: Store, previous: Fence | None, by: str) -> None:
    """After ``by`` claimed the store from ``previous``: if that run's record is still open
    (its lock expired while its coordinator was paused or on a host that vanished), close it
    ABORTED, so the history does not say it runs forever. A final record is left alone."""
    if previous is None or previous.run_id == by:
        return
    record = store.get_run(previous.run_id)
    if record is None or record.phase not in ACTIVE_PHASES:
        return
    finish(record, Phase.ABORTED, f"taken over by run {by}: its lock expired while it "
           "held it (its coordinator was paused or its host gone)", measure_stored(store))
    if store.close_run(record):
        log.warning(event("orphan-closed", run=previous.run_id, by=by))

