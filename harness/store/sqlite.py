"""The embedded default store: stdlib sqlite3 in WAL mode, one file under the data folder.

WAL lets the coordinator and every worker process read while one of them writes, and
writers queue on SQLite's lock (up to the store's timeout, see ``_begin_write``) instead of
failing. Orders are keyed by ``seq`` (INTEGER PRIMARY KEY, the rowid), so a worker's batched
update walks the table in key order; the UUID ``id`` has its own unique index as in MongoDB,
and nothing else is indexed (the comment above ORDERS_SCHEMA says why).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.orders import PENDING, PROCESSED, Order, processed_note
from harness.record import RunRecord
from harness.state import ACTIVE_PHASES
from harness.store.base import (
    PERCENTS,
    Done,
    DuplicateOrderError,
    ErrorMap,
    Fence,
    Spread,
    StoreError,
    Tally,
    Window,
    rank,
    stale,
    translating,
)

ORDER_COLUMNS = (
    "seq", "id", "cliente", "valor", "tier", "priority", "observacoes", "status", "created_at",
)
# No secondary index on orders: every index is written by every insert, and one on (priority,
# status) by every update too (the row moves within it). Measured, 1M orders, store floor in one
# process: with indexes on (priority, status) and created_at, insert 3.87-4.21 s and update
# 4.48-4.69 s; without them 2.91-2.92 s and 3.03-3.08 s; a 1M run 9.03 s -> 6.14-6.37 s. The
# reads they served are scans either way (windows, latency, per-bin counts: every processed
# row) or page through the table by seq (pending_seqs, a resume's and the floor's: 10 ms a page
# of 10,000; a pass that finds none, 0.15 s at 1M), and the tally of a stopped run is one scan
# (0.46 s at 1M). No query filters or sorts on created_at (the wait latency only reads it).
ORDERS_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS orders (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    cliente      TEXT NOT NULL,
    valor        REAL NOT NULL,
    tier         TEXT NOT NULL,
    priority     TEXT NOT NULL,
    observacoes  TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    processed_at REAL,
    worker       TEXT,
    attempts     INTEGER,
    job          TEXT
)""",)
SCHEMA = (*ORDERS_SCHEMA, """
CREATE TABLE IF NOT EXISTS process_runs (
    run_id     TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    record     TEXT NOT NULL
)""", """
CREATE TABLE IF NOT EXISTS fence (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    run_id TEXT NOT NULL,
    epoch  INTEGER NOT NULL
)""")
ACTIVE = tuple(p.value for p in ACTIVE_PHASES)
# Checkpoint the WAL every ~80 MB instead of SQLite's 4 MB: random UUID keys touch pages all
# over the id index, and frequent checkpoints rewrite them again and again (measured: 1M
# inserts 17.7 s at the default, 12.8 s at 20,000 pages).
#
# secure_delete off, SQLite's own default: Debian builds its SQLite (which Python's sqlite3
# uses here) with secure delete on, so every freed page is overwritten with zeros and logged.
# Clearing the last run's 100,000 orders then wrote 31 MB to the WAL and took 130 ms of a
# 1,000-order run's start (with it off: 0.05 MB, 13 ms). The orders are generated test data
# that the next run replaces; nothing in them needs shredding.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA wal_autocheckpoint=20000",
    "PRAGMA cache_size=-65536",
    "PRAGMA secure_delete=OFF",
)
LOCK_POLL_FIRST_S = 0.0001
LOCK_POLL_MAX_S = 0.001
LATENCY_SQL = {"wait": "started_at - created_at", "service": "processed_at - started_at"}

FIELD_NAMES = {
    "created_at": "createdAt", "started_at": "startedAt", "processed_at": "processedAt",
}


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is open, if anything: SQLite may have rolled back already (a failed
    COMMIT), and a second ROLLBACK would hide the first error. A handle must never keep a
    transaction (and the write lock) after an error: a worker reuses its handle."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _percentiles(buckets: Sequence[tuple[int, int]], count: int, percents: Sequence[int],
                 high: float) -> dict[int, float]:
    """Nearest-rank percentiles (seconds) from sorted (bucket in us, count) pairs; never
    above the exact maximum."""
    out: dict[int, float] = {}
    for p in percents:
        wanted, seen = rank(p, count), 0
        for bucket, n in buckets:
            seen += n
            if seen >= wanted:
                out[p] = min(bucket / 1_000_000, high)
                break
    return out


@translating
class SQLiteStore:
    """Orders and run history in one SQLite file; open one per process."""

    backend = "sqlite"

    def __init__(self, path: Path | str, timeout: float = 3.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._fence: Fence | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every write below opens and commits its own transaction.
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            for pragma in PRAGMAS:
                self._db.execute(pragma)
            # What _begin_write restores: the timeout sqlite3.connect set, exactly.
            waited = self._db.execute("PRAGMA busy_timeout").fetchone()[0]
            self._busy_timeout = f"PRAGMA busy_timeout = {int(waited)}"
            for statement in SCHEMA:
                self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(orders)")}
            if "job" not in columns:  # a file written before orders kept their job
                self._db.execute("ALTER TABLE orders ADD COLUMN job TEXT")
            self._identity = self._file_identity()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open SQLite store at {self.path}: {exc} (waited up to {timeout:g}s)"
            ) from exc

    def error_map(self) -> ErrorMap:
        """SQLite's errors as StoreError naming the file: "database is locked" after the busy
        timeout is how an unavailable SQLite store shows itself."""
        return {sqlite3.Error: lambda exc: StoreError(
            f"SQLite store {self.path}: {exc} (waited up to {self.timeout:g}s)")}

    def _file_identity(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_dev, stat.st_ino

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": sqlite3.sqlite_version, "location": str(self.path)}

    def _read_fence(self) -> Fence | None:
        row = self._db.execute("SELECT run_id, epoch FROM fence WHERE id = 1").fetchone()
        return Fence(row[0], int(row[1])) if row else None

    def _fenced(self, fence: Fence | None, *statements: tuple[str, Sequence[Any] | None]) -> int:
        """Run ``statements`` (SQL, parameter rows for executemany, or None for one plain
        statement) in one write transaction, after checking in it that ``fence`` still owns
        the store; return the rows the first one changed. One transaction per batch is also
        the difference between 1k and 80k rows/s."""
        db = self._db
        try:
            self._begin_write()
            current = self._read_fence()
            if fence is None or current != fence:
                raise stale(fence, current)
            changed = [db.executemany(sql, rows).rowcount if rows is not None
                       else db.execute(sql).rowcount for sql, rows in statements]
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return changed[0] if changed else 0

    def _begin_write(self) -> None:
        """BEGIN IMMEDIATE, waiting for the write lock here rather than in SQLite's busy
        handler, up to the same timeout.

        Why: every writer of a run (the coordinator and its generator process inserting
        chunks, the workers updating batches) queues on SQLite's one write lock, and SQLite's
        handler sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries: a writer queued behind a
        ~30 ms chunk insert learns that the lock is free up to ~15 ms late, and the lock idles
        meanwhile. Here a waiter tries again after 0.1, 0.2, 0.4, 0.8, then every 1 ms (a try
        is a few system calls). Measured, 1M orders, 2 workers, alternating, 4 runs each: the
        NORMAL window 2.09-2.36 s -> 1.99-2.07 s, the run 6.03-6.32 s -> 5.86-6.21 s.

        Callers call it inside their ``try`` that rolls back: an exception raised between
        the BEGIN and their own code (a signal's, such as RQ's job timeout) must not leave
        the handle holding the lock."""
        db = self._db
        deadline = time.monotonic() + self.timeout
        pause = LOCK_POLL_FIRST_S
        db.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, LOCK_POLL_MAX_S)
        finally:
            db.execute(self._busy_timeout)

    def claim(self, run_id: str) -> Fence:
        db = self._db
        try:
            self._begin_write()
            current = self._read_fence()
            fence = Fence(run_id, current.epoch + 1 if current and current.run_id == run_id else 0)
            db.execute("INSERT OR REPLACE INTO fence (id, run_id, epoch) VALUES (1, ?, ?)",
                       (fence.run_id, fence.epoch))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        self._fence = fence
        return fence

    def bind(self, fence: Fence) -> None:
        self._fence = fence

    def fence(self) -> Fence | None:
        return self._read_fence()

    def clear_orders(self) -> None:
        # Dropping is instant where DELETE of a million rows takes seconds.
        self._fenced(self._fence, ("DROP TABLE IF EXISTS orders", None),
                     *((sql, None) for sql in ORDERS_SCHEMA))
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def insert_orders(self, orders: Sequence[Order]) -> None:
        placeholders = ",".join("?" * len(ORDER_COLUMNS))
        inserted = self._fenced(self._fence, (
            f"INSERT OR IGNORE INTO orders ({','.join(ORDER_COLUMNS)}) VALUES ({placeholders})",
            orders))
        if inserted != len(orders):
            raise DuplicateOrderError(inserted, len(orders) - inserted)

    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1,
        job: str | None = None,
    ) -> int:
        note = processed_note(priority)
        return self._fenced(self._fence, (
            "UPDATE orders SET status = ?, observacoes = ?, worker = ?, started_at = ?, "
            "processed_at = ?, attempts = ?, job = ? WHERE seq = ? AND status = ?",
            [(PROCESSED, note, worker, start, end, attempt, job, seq, PENDING)
             for seq, start, end in done]))

    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        rows = self._db.execute(
            "SELECT seq FROM orders WHERE priority = ? AND status = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (priority, PENDING, after, limit),
        )
        return [seq for (seq,) in rows]

    def delete_pending(self) -> int:
        return self._fenced(self._fence, ("DELETE FROM orders WHERE status = ?", [(PENDING,)]))

    def truncate_from(self, seq: int) -> int:
        return self._fenced(self._fence, ("DELETE FROM orders WHERE seq >= ?", [(seq,)]))

    def tally(self) -> Tally:
        rows = self._db.execute(
            "SELECT priority, status, COUNT(*), MAX(seq) FROM orders GROUP BY priority, status"
        ).fetchall()
        return Tally({(p, s): n for p, s, n, _ in rows}, max((m for *_, m in rows), default=-1))

    def ping(self) -> None:
        # Takes the write lock and lets it go: a reader would pass while another process
        # holds the database locked, and a locked store is one the run cannot use.
        try:
            self._begin_write()
        finally:
            _rollback(self._db)

    def verify(self) -> None:
        try:
            same = self._file_identity() == self._identity
        except OSError:
            same = False
        if not same:
            raise StoreError(f"SQLite store {self.path} was removed or replaced while in use; "
                             "what this run wrote since is not in it")

    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM orders WHERE 1", list[str]()
        if priority is not None:
            sql, args = sql + " AND priority = ?", [*args, priority]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return int(self._db.execute(sql, args).fetchone()[0])

    def windows(self) -> dict[str, Window]:
        rows = self._db.execute(
            "SELECT priority, COUNT(*), MIN(started_at), MAX(started_at), MIN(processed_at), "
            "MAX(processed_at) FROM orders WHERE status = ? GROUP BY priority",
            (PROCESSED,),
        )
        return {row[0]: Window(*row[1:]) for row in rows}

    def processed_per_bin(self, since: float, bin_ms: int) -> dict[str, dict[int, int]]:
        rows = self._db.execute(
            "SELECT priority, CAST((processed_at - ?) * 1000.0 / ? AS INTEGER) AS bin, COUNT(*) "
            "FROM orders WHERE status = ? GROUP BY priority, bin",
            (since, bin_ms, PROCESSED),
        )
        out: dict[str, dict[int, int]] = {}
        for priority, b, n in rows:
            bins = out.setdefault(priority, {})
            bins[max(0, b)] = bins.get(max(0, b), 0) + n
        return out

    def latency(self, kind: str, percents: Sequence[int] = PERCENTS) -> dict[str, Spread]:
        """One grouped scan, no sort: per priority, a histogram of the values in
        microseconds kept to 4 significant digits (bucket widths 1 us below 10 ms, 10 us to
        100 ms, 100 us to 1 s, 1 ms to 10 s ...: within 0.1 %), with each bucket's exact
        maximum and sum for the exact max and mean. Each percentile is the nearest rank's
        bucket, read from the histogram's counts.

        A window function ranking every value measured 2.8 s for both latencies at
        1,000,000 orders; this, 1.4 s (SQLite still sorts rows to group them, but on an
        integer key, with no window). HdrHistogram, which Locust and OMB report from, keeps
        a similar precision."""
        expr = LATENCY_SQL[kind]
        steps = " ".join(f"WHEN us < {10 ** (d + 4)} THEN us / {10 ** d} * {10 ** d}"
                         for d in range(1, 9))
        histogram: dict[str, list[tuple[int, int]]] = {}
        high: dict[str, float] = {}
        total: dict[str, float] = {}
        for priority, bucket, n, most, summed in self._db.execute(
            f"SELECT priority, CASE WHEN us < 10000 THEN us {steps} ELSE us END AS b, COUNT(*), "
            "       MAX(v), SUM(v) "
            f"FROM (SELECT priority, {expr} AS v, CAST(ROUND(({expr}) * 1000000) AS INTEGER) AS us "
            "      FROM orders WHERE status = ?) GROUP BY priority, b", (PROCESSED,)):
            histogram.setdefault(priority, []).append((int(bucket), int(n)))
            high[priority] = max(high.get(priority, most), most)
            total[priority] = total.get(priority, 0.0) + summed
        out = {}
        for priority, buckets in histogram.items():
            n = sum(count for _, count in buckets)
            out[priority] = Spread(n, _percentiles(sorted(buckets), n, percents, high[priority]),
                                   high[priority], total[priority] / n)
        return out

    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        cursor = self._db.execute(
            f"SELECT * FROM orders WHERE seq IN ({','.join('?' * len(seqs))}) ORDER BY seq",
            list(seqs),
        )
        names = [FIELD_NAMES.get(d[0], d[0]) for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def save_run(self, record: RunRecord, fenced: bool = True) -> None:
        row = (record.run_id, record.started_at or "", json.dumps(record.to_json()))
        sql = "INSERT OR REPLACE INTO process_runs (run_id, started_at, record) VALUES (?, ?, ?)"
        if fenced:
            self._fenced(self._fence, (sql, [row]))
        else:
            self._db.execute(sql, row)

    def close_run(self, record: RunRecord) -> bool:
        db = self._db
        try:
            self._begin_write()
            stored = db.execute("SELECT record FROM process_runs WHERE run_id = ?",
                                (record.run_id,)).fetchone()
            if stored is not None and json.loads(stored[0]).get("phase") not in ACTIVE:
                db.execute("ROLLBACK")
                return False
            db.execute("INSERT OR REPLACE INTO process_runs (run_id, started_at, record) "
                       "VALUES (?, ?, ?)",
                       (record.run_id, record.started_at or "", json.dumps(record.to_json())))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return True

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT record FROM process_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return RunRecord.from_json(json.loads(row[0])) if row else None

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        rows = self._db.execute(
            "SELECT record FROM process_runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [RunRecord.from_json(json.loads(record)) for (record,) in rows]

    def clear_runs(self) -> None:
        self._db.execute("DELETE FROM process_runs")

    def close(self) -> None:
        self._db.close()
