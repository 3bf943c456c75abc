"""The run history, kept honest: a run's last record is never lost.

A run's end is written once, at the end, to a store that may be busy (SQLite's single
writer taken by a stalled process, a MongoDB primary stepping down) or gone. Measured: on a
busy machine a SIGTERM-ed run's ABORTED record did not get through within the 3 s store
timeout, and its history said GENERATING forever. So the last write is retried until a
generous deadline and, if the store still refuses, the record is put aside as a JSON file in
the data folder; the next command that opens the store (`harness run`, `resume`, `runs`, the
HTTP API ...) saves it through :func:`reconcile` and says so. A final record already stored
is never overwritten by one put aside (``close_run``).

"The store" failing includes a data folder that can no longer be written (made immutable
with ``chattr +i`` mid-run, its disk gone read-only): reopening the store there is refused
as bad input (a ConfigError), which once escaped as exit 2 within 0.2 s, with no retry and
nothing put aside, and the history said GENERATING until a resume. The folder records are
put aside in is created when a run starts (:func:`prepare_aside`), so that it can still be
written when its parent no longer can.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from harness import bounds
from harness.config import Settings, redact
from harness.errors import ConfigError, StaleRun, StoreError
from harness.logs import event
from harness.record import RunRecord
from harness.store import Store, open_store

log = logging.getLogger("harness")
# How long the last record write of a run is retried before it is put aside.
FINAL_DEADLINE_S = 30.0
RETRY_EVERY_S = 0.5


def aside_dir(settings: Settings) -> Path:
    return settings.data_dir / "pending-records"


def prepare_aside(settings: Settings) -> Path | None:
    """Create the folder records are put aside in, now, while the data folder can be
    written; None if it cannot (nothing else needs it: the run goes on)."""
    try:
        folder = aside_dir(settings)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        return None


def save_final(settings: Settings, store: Store | None, record: RunRecord,
               deadline_s: float | None = None) -> str:
    """Save a run's last record; return where it went: "store", "store (closed)" or the
    file it was put aside in.

    Written fenced while this coordinator still owns the store; a coordinator that lost it
    (StaleRun: it was paused past its lock and another run or a takeover claimed the store)
    may still close its own record if nobody closed it, never overwrite a final one.
    ``store`` None: the store already failed this run; try a fresh connection. Any failure
    to write counts (StoreError; a data folder that cannot be written, ConfigError; an
    OSError): it is retried until ``deadline_s`` (default FINAL_DEADLINE_S), then the record
    is put aside.
    """
    deadline = time.monotonic() + (FINAL_DEADLINE_S if deadline_s is None else deadline_s)
    error: Exception | None = None
    given = store  # the caller's: it closes it
    while True:
        handle = store
        try:
            if handle is None:
                handle = open_store(settings)
            try:
                handle.save_run(record)
                return "store"
            except StaleRun:
                return "store (closed)" if handle.close_run(record) else "store (already closed)"
        except (StoreError, ConfigError, OSError) as exc:
            error = exc
            store = None  # the handle may be what is broken; the next try opens a fresh one
        finally:
            if handle is not None and handle is not given:
                handle.close()  # one this call opened
        if time.monotonic() + RETRY_EVERY_S > deadline:
            break
        time.sleep(RETRY_EVERY_S)
    try:
        path = put_aside(settings, record)
    except OSError as exc:  # the folder refuses it too: say so, in one line, and go on
        log.error(event("record-lost", run=record.run_id, phase=record.phase,
                        error=redact(str(error)), aside=f"{aside_dir(settings)}: {exc}",
                        action="the store keeps the run's last checkpoint; "
                               "`harness resume` finishes the run"))
        return "lost"
    log.error(event("record-aside", run=record.run_id, phase=record.phase, file=str(path),
                    error=redact(str(error)), action="the next harness command saves it"))
    return str(path)


def put_aside(settings: Settings, record: RunRecord) -> Path:
    folder = aside_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.to_json()))
    tmp.replace(path)  # whole or not at all
    return path


def reconcile(settings: Settings, store: Store,
              report: Callable[[str], None] = lambda line: None) -> list[str]:
    """Save the records put aside by runs whose store was unavailable at their end; return
    the run ids saved, each also told to ``report``. A record stored final meanwhile wins
    over the one put aside."""
    folder = aside_dir(settings)
    if not folder.is_dir():
        return []
    saved = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = RunRecord.from_json(bounds.loads(bounds.read_bounded(
                path, "record put aside", bounds.MAX_RECORD_BYTES), str(path)))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring %s, which is not a run record: %s", path, exc)
            continue
        if store.close_run(record):
            saved.append(record.run_id)
            report(f"saved the {record.phase} record of run {record.run_id}, put aside in "
                   f"{path} when the store was unavailable")
            log.warning(event("record-reconciled", run=record.run_id, phase=record.phase,
                              file=str(path)))
        path.unlink(missing_ok=True)
    return saved


def list_runs(settings: Settings, limit: int | None = None,
              report: Callable[[str], None] = lambda line: None) -> list[RunRecord]:
    """The run history, newest first, with any record put aside saved first."""
    store = open_store(settings)
    try:
        reconcile(settings, store, report)
        return store.list_runs(limit)
    finally:
        store.close()


def get_run(settings: Settings, run_id: str) -> RunRecord | None:
    store = open_store(settings)
    try:
        reconcile(settings, store)
        return store.get_run(run_id)
    finally:
        store.close()
