"""The embedded default store: stdlib sqlite3 in WAL mode, one file under the data folder.

WAL lets the coordinator and every worker process read while one of them writes, and
writers queue on SQLite's lock (``busy_timeout``) instead of failing. Orders are keyed by
``seq`` (INTEGER PRIMARY KEY, the rowid), so a worker's batched update walks the table in
key order; the UUID ``id`` has its own unique index as in MongoDB.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from harness.orders import PENDING, PROCESSED, Order, processed_note
from harness.store.base import Done, DuplicateOrderError, StoreError, Tally, Window

ORDER_COLUMNS = (
    "seq", "id", "cliente", "valor", "tier", "priority", "observacoes", "status", "created_at",
)
SCHEMA = """
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
    attempts     INTEGER
);
CREATE INDEX IF NOT EXISTS orders_priority_status ON orders (priority, status);
CREATE INDEX IF NOT EXISTS orders_created_at ON orders (created_at);
CREATE TABLE IF NOT EXISTS process_runs (
    run_id     TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    record     TEXT NOT NULL
);
"""
# Checkpoint the WAL every ~80 MB instead of SQLite's 4 MB: random UUID keys touch pages all
# over the id index, and frequent checkpoints rewrite them again and again (measured: 1M
# inserts 17.7 s at the default, 12.8 s at 20,000 pages).
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA wal_autocheckpoint=20000",
    "PRAGMA cache_size=-65536",
)
F = TypeVar("F", bound=Callable[..., Any])


def _translated(method: F) -> F:
    """SQLite's errors as StoreError naming the file: "database is locked" after the busy
    timeout is how an unavailable SQLite store shows itself."""

    @functools.wraps(method)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc} (waited up to {self.timeout:g}s)") from exc

    return cast(F, wrapper)


FIELD_NAMES = {
    "created_at": "createdAt", "started_at": "startedAt", "processed_at": "processedAt",
}


class SQLiteStore:
    """Orders and run history in one SQLite file; open one per process."""

    backend = "sqlite"

    def __init__(self, path: Path | str, timeout: float = 3.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every write below opens and commits its own transaction.
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            for pragma in PRAGMAS:
                self._db.execute(pragma)
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open SQLite store at {self.path}: {exc} (waited up to {timeout:g}s)"
            ) from exc

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": sqlite3.sqlite_version, "location": str(self.path)}

    def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """One transaction for the whole batch: the difference between 1k and 80k rows/s."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            changed = db.executemany(sql, rows).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return changed

    @_translated
    def clear_orders(self) -> None:
        # Dropping is instant where DELETE of a million rows takes seconds.
        self._db.execute("DROP TABLE IF EXISTS orders")
        self._db.executescript(SCHEMA)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @_translated
    def insert_orders(self, orders: Sequence[Order]) -> None:
        placeholders = ",".join("?" * len(ORDER_COLUMNS))
        inserted = self._write(
            f"INSERT OR IGNORE INTO orders ({','.join(ORDER_COLUMNS)}) VALUES ({placeholders})",
            orders,
        )
        if inserted != len(orders):
            raise DuplicateOrderError(inserted, len(orders) - inserted)

    @_translated
    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1
    ) -> int:
        note = processed_note(priority)
        return self._write(
            "UPDATE orders SET status = ?, observacoes = ?, worker = ?, started_at = ?, "
            "processed_at = ?, attempts = ? WHERE seq = ? AND status = ?",
            [(PROCESSED, note, worker, start, end, attempt, seq, PENDING)
             for seq, start, end in done],
        )

    @_translated
    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        rows = self._db.execute(
            "SELECT seq FROM orders WHERE priority = ? AND status = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (priority, PENDING, after, limit),
        )
        return [seq for (seq,) in rows]

    @_translated
    def delete_pending(self) -> int:
        return int(self._db.execute("DELETE FROM orders WHERE status = ?", (PENDING,)).rowcount)

    @_translated
    def truncate_from(self, seq: int) -> int:
        return int(self._db.execute("DELETE FROM orders WHERE seq >= ?", (seq,)).rowcount)

    @_translated
    def tally(self) -> Tally:
        rows = self._db.execute(
            "SELECT priority, status, COUNT(*), MAX(seq) FROM orders GROUP BY priority, status"
        ).fetchall()
        return Tally({(p, s): n for p, s, n, _ in rows}, max((m for *_, m in rows), default=-1))

    @_translated
    def ping(self) -> None:
        # Takes the write lock and lets it go: a reader would pass while another process
        # holds the database locked, and a locked store is one the run cannot use.
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("ROLLBACK")

    @_translated
    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM orders WHERE 1", list[str]()
        if priority is not None:
            sql, args = sql + " AND priority = ?", [*args, priority]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        return int(self._db.execute(sql, args).fetchone()[0])

    @_translated
    def windows(self) -> dict[str, Window]:
        rows = self._db.execute(
            "SELECT priority, COUNT(*), MIN(started_at), MAX(started_at), MIN(processed_at), "
            "MAX(processed_at) FROM orders WHERE status = ? GROUP BY priority",
            (PROCESSED,),
        )
        return {row[0]: Window(*row[1:]) for row in rows}

    @_translated
    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        cursor = self._db.execute(
            f"SELECT * FROM orders WHERE seq IN ({','.join('?' * len(seqs))}) ORDER BY seq",
            list(seqs),
        )
        names = [FIELD_NAMES.get(d[0], d[0]) for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    @_translated
    def save_run(self, record: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO process_runs (run_id, started_at, record) VALUES (?, ?, ?)",
            (record["runId"], record.get("startedAt") or "", json.dumps(record)),
        )

    @_translated
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM process_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    @_translated
    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM process_runs ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [json.loads(record) for (record,) in rows]

    @_translated
    def clear_runs(self) -> None:
        self._db.execute("DELETE FROM process_runs")

    def close(self) -> None:
        self._db.close()
