"""Resuming a run that stopped before DONE: the store is the truth.

:func:`load` finds the run to resume and refuses, before anything is written, a run the
store no longer holds as it was (a later run replaced its orders, a cancel deleted its
pending ones, some were deleted by hand). :func:`restore` learns where it stopped: a chunk
left half-inserted (an unordered MongoDB insert cut short) is dropped, so that the
generator makes it again, byte for byte; the live state in Redis is set to what the store
holds; the record notes the resume. The coordinator then goes through the same phases as
any run, under a new epoch (claimed from the store's fence), so that nothing left from
before the resume changes anything.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harness.config import RUN_SHAPE, Settings
from harness.errors import CannotResume
from harness.logs import event
from harness.orders import NORMAL, PENDING, PROCESSED, VIP, id_prefix
from harness.record import JobCounts, Resume, RunRecord, iso
from harness.state import Phase, RunState
from harness.store import Store

log = logging.getLogger("harness")


@dataclass
class Resumption:
    """The run to resume: its record, the settings it ran with and its seed."""

    record: RunRecord
    settings: Settings
    seed: int

    @property
    def started(self) -> float:
        assert self.record.started_at is not None
        return datetime.fromisoformat(self.record.started_at).timestamp()


def load(store: Store, settings: Settings, which: str | None, concurrency: int | None) -> Resumption:
    """The run to resume: ``which`` (a run id) or the latest. ``settings`` say where to
    connect; the record gives the run's shape and seed; ``concurrency`` may change."""
    latest = next(iter(store.list_runs(1)), None)
    record = store.get_run(which) if which else latest
    if record is None or latest is None:
        raise CannotResume(f"no run {which} is recorded" if which
                           else "no run is recorded; nothing to resume")
    run_id = record.run_id
    if run_id != latest.run_id:
        raise CannotResume(f"run {run_id} cannot be resumed: the store now holds the orders "
                           f"of a later run, {latest.run_id}")
    if record.is_done:
        raise CannotResume(f"run {run_id} is DONE; nothing to resume")
    if record.cancel is not None and record.cancel.removed_pending:
        raise CannotResume(f"run {run_id} was cancelled and its pending orders deleted; "
                           "start a new run (a cancel with --keep-pending can be resumed)")
    if record.started_at is None:
        raise CannotResume(f"run {run_id} never started; start a new run")
    shape = {k: record.parameters[k] for k in RUN_SHAPE if record.parameters.get(k) is not None}
    settings = settings.replace(**shape).replace(concurrency=concurrency)
    seed = int(record.parameters["seed"])
    tally = store.tally()
    if tally.count() != tally.max_seq + 1:
        raise CannotResume(f"run {run_id} cannot be resumed: {tally.max_seq + 1 - tally.count():,} "
                           "of its orders were deleted from the store")
    first = store.get_orders([0])
    if first and int(first[0]["id"].replace("-", "")[:12], 16) != id_prefix(seed):
        raise CannotResume(f"the orders in the store are not run {run_id}'s")
    record.parameters = {**settings.public_dict(), "seed": seed}
    return Resumption(record, settings, seed)


@dataclass(frozen=True)
class Restored:
    """What the store held when the run was resumed."""

    generated: int
    vip_total: int
    normal_total: int


def restore(store: Store, state: RunState, resumption: Resumption, epoch: int,
            timing_fields: dict[str, Any]) -> Restored:
    """Set the live state and the record to what the store holds; see the module's doc.

    Chunks are inserted in order and, on SQLite, each in one transaction; only the tail can
    be partial, and none of it was enqueued.
    """
    s, record = resumption.settings, resumption.record
    tally = store.tally()
    stored, truncated = tally.count(), 0
    if stored < s.quantity and stored % s.chunk_size:
        truncated = store.truncate_from(stored // s.chunk_size * s.chunk_size)
        tally = store.tally()
    done = {p: tally.count(p, PROCESSED) for p in (VIP, NORMAL)}
    fields: dict[str, Any] = {
        "generated": tally.count(), "vipTotal": tally.count(VIP),
        "normalTotal": tally.count(NORMAL), "processed:VIP": done[VIP],
        "processed:NORMAL": done[NORMAL], **timing_fields,
    }
    for p, w in store.windows().items():
        if w.first_started is not None:
            fields.update({f"start:{p}": w.first_started, f"end:{p}": w.last_processed})
    state.set(**fields)
    resumed = Resume(
        at=iso(time.time()), epoch=epoch, from_phase=record.stopped_in_phase or record.phase,
        from_error=record.error, last_checkpoint_at=record.checkpoint_at, stored=tally.count(),
        truncated=truncated, processed=done[VIP] + done[NORMAL],
        pending=JobCounts(vip=tally.count(VIP, PENDING), normal=tally.count(NORMAL, PENDING)))
    record.resumes.append(resumed)
    record.phase, record.error = Phase.GENERATING.value, None
    record.cancel = record.stopped_in_phase = record.finished_at = None
    log.warning(event("resumed", run=record.run_id, epoch=epoch, fromPhase=resumed.from_phase,
                      stored=resumed.stored, truncated=truncated, processed=resumed.processed))
    return Restored(tally.count(), tally.count(VIP), tally.count(NORMAL))
