"""PostgreSQL through psycopg 3: tables ``orders``, ``process_runs`` and ``fence``, the same
tables and snake_case columns as the SQLite store, timestamps as ``timestamptz``.

What a PostgreSQL engineer would do for this workload, each measured (100k-300k orders,
this machine, PostgreSQL 15):

- a chunk's insert is one ``COPY`` (145k orders/s; ``executemany`` of INSERTs is several
  times slower). A chunk that meets stored ids goes through a temporary table and
  ``INSERT ... ON CONFLICT DO NOTHING`` instead, so the others are inserted and the
  duplicates counted (the contract's unordered insert);
- a committed group of a batch is one set-based ``UPDATE ... FROM unnest(seqs, starts,
  ends)``, joined on the primary key by a nested loop (the planner's hash join read the whole
  table for every group: 27k updates/s at 100k orders, falling with N);
- the table is filled to 50 % (``fillfactor``) and no index covers a column an update
  changes, so the update of an order is a HOT update: the new row version goes in the same
  page and no index is touched. The (priority, status) index the SQLite store has would
  turn every update into five index insertions: updates went from 57k/s to 28k/s, inserts
  from 146k/s to 68k/s with it. Pages of pending orders walk the primary key instead
  (``seq > after`` in order), which reads each order once over a whole run;
- ``synchronous_commit = off`` for the harness's sessions, as SQLite's ``synchronous =
  NORMAL`` in WAL mode: a crash of the server's machine may lose the last commits, never
  corrupt; a killed harness process loses nothing that committed.

**The fence** (see :mod:`harness.store.base`) is checked as in SQLite, inside each write's
own transaction: ``SELECT ... FROM fence FOR SHARE`` first, so a claim (an UPDATE of that
row) waits for writes in flight and every later write sees the new owner.

**Connections.** A handle holds one connection (autocommit; writes open their own
transactions), opened with the store timeout as libpq's ``connect_timeout`` (libpq waits at
least 2 s) and as ``lock_timeout``. Every process opens its own handle and keeps it for its
life (a worker, for every job it runs), so a pool would hold one connection per process
anyway; none is used. A connection the server cut (``pg_terminate_backend``, a restart, a
network drop) is replaced on the next call; a call that failed with it is tried once more
on the new one when that is safe (reads, record writes, deletes, a chunk's insert, whose
retry checks whether the lost commit went through), and otherwise fails as a StoreError: a
batch's update is then retried by its job, which counts from the store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from harness.config import redact
from harness.errors import ConfigError, StoreError
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
    Tally,
    Window,
    stale,
    translating,
)

T = TypeVar("T")
ORDER_COLUMNS = ("seq", "id", "cliente", "valor", "tier", "priority", "observacoes", "status",
                 "created_at")
COPY_ORDERS = f"COPY orders ({', '.join(ORDER_COLUMNS)}) FROM STDIN"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS orders (
        seq          bigint PRIMARY KEY,
        id           uuid NOT NULL UNIQUE,
        cliente      text NOT NULL,
        valor        double precision NOT NULL,
        tier         text NOT NULL,
        priority     text NOT NULL,
        observacoes  text NOT NULL,
        status       text NOT NULL,
        created_at   timestamptz NOT NULL,
        started_at   timestamptz,
        processed_at timestamptz,
        worker       text,
        attempts     integer,
        job          text
    ) WITH (fillfactor = 50)""",
    "CREATE INDEX IF NOT EXISTS orders_created_at ON orders (created_at)",
    "CREATE SEQUENCE IF NOT EXISTS process_runs_written",
    """CREATE TABLE IF NOT EXISTS process_runs (
        run_id     text PRIMARY KEY,
        started_at text NOT NULL,
        record     jsonb NOT NULL,
        written    bigint NOT NULL DEFAULT nextval('process_runs_written')
    )""",
    "CREATE INDEX IF NOT EXISTS process_runs_started_at ON process_runs (started_at DESC, written DESC)",
    """CREATE TABLE IF NOT EXISTS fence (
        id     integer PRIMARY KEY CHECK (id = 1),
        run_id text NOT NULL,
        epoch  integer NOT NULL
    )""",
)
TABLES = ("orders", "process_runs", "fence")
SCHEMA_LOCK = 0x6861726E657373  # "harness": one process creates the tables, the others wait
READ_FENCE = "SELECT run_id, epoch FROM fence WHERE id = 1"
# Shared: writes of orders run at once; a claim (UPDATE of the row) waits for them to commit.
LOCK_FENCE = READ_FENCE + " FOR SHARE"
# The group update joins its seqs to the primary key one by one (see the module's notes).
NESTED_LOOP = ", set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
MARK_PROCESSED = (
    "UPDATE orders o SET status = %s, observacoes = %s, worker = %s, attempts = %s, job = %s, "
    "started_at = to_timestamp(u.s), processed_at = to_timestamp(u.p) "
    "FROM unnest(%s::bigint[], %s::float8[], %s::float8[]) AS u(seq, s, p) "
    "WHERE o.seq = u.seq AND o.status = %s"
)
UPSERT_RUN = (
    "INSERT INTO process_runs (run_id, started_at, record) VALUES (%s, %s, %s::jsonb) "
    "ON CONFLICT (run_id) DO UPDATE SET started_at = EXCLUDED.started_at, "
    "record = EXCLUDED.record, written = nextval('process_runs_written')"
)
CLAIM = (
    "INSERT INTO fence (id, run_id, epoch) VALUES (1, %s, 0) ON CONFLICT (id) DO UPDATE SET "
    "run_id = EXCLUDED.run_id, "
    "epoch = CASE WHEN fence.run_id = EXCLUDED.run_id THEN fence.epoch + 1 ELSE 0 END "
    "RETURNING run_id, epoch"
)
EPOCH = "extract(epoch FROM {0})::float8"
ORDER_FIELDS = (
    ("seq", "seq"), ("id", "id::text"), ("cliente", "cliente"), ("valor", "valor"),
    ("tier", "tier"), ("priority", "priority"), ("observacoes", "observacoes"),
    ("status", "status"), ("createdAt", EPOCH.format("created_at")),
    ("startedAt", EPOCH.format("started_at")), ("processedAt", EPOCH.format("processed_at")),
    ("worker", "worker"), ("attempts", "attempts"), ("job", "job"),
)
LATENCY_SQL = {"wait": "started_at - created_at", "service": "processed_at - started_at"}
# Sorting a million latencies for the percentiles stays in memory with this much.
LATENCY_WORK_MEM = "256MB"
ACTIVE = [p.value for p in ACTIVE_PHASES]


def _line(exc: BaseException) -> str:
    """A driver error's first line (libpq adds detail lines), password hidden."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def _fractions(percents: Sequence[int]) -> list[float]:
    """``percentile_disc`` fractions giving the nearest rank ceil(p/100 * n) exactly: just
    below p/100, so that floating point cannot push an exact product to the next rank."""
    return [max(p / 100 - 1e-12, 0.0) for p in percents]


@translating
class PostgresStore:
    """Orders and run history in one PostgreSQL database; open one per process."""

    backend = "postgres"

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout
        self._fence: Fence | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._conn = self._connect()
        try:
            self._ensure_schema(self._conn)
            version = self._conn.execute("SHOW server_version").fetchone()
            self._version = str(version[0]).split()[0] if version else "unknown"
            self._database = self._conn.info.dbname
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot use PostgreSQL at {redact(url)}: {_line(exc)}") from exc

    # -- connections ---------------------------------------------------------------------

    def error_map(self) -> ErrorMap:
        """psycopg's errors as StoreError naming the (redacted) server; a lock wait past the
        store timeout reads "canceling statement due to lock timeout"."""
        return {psycopg.Error: lambda exc: StoreError(f"PostgreSQL at {redact(self.url)}: "
                                                      f"{_line(exc)}")}

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, application_name="harness",
                                   connect_timeout=max(2, math.ceil(self.timeout)))
        except psycopg.ProgrammingError as exc:  # libpq could not read the URL
            raise ConfigError(f"DATABASE_URL / --database-url {redact(self.url)!r} is not a "
                              f"usable PostgreSQL URL: {_line(exc)}", "database_url") from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach PostgreSQL at {redact(self.url)}: {_line(exc)}") from exc
        try:
            conn.execute("SELECT set_config('synchronous_commit', 'off', false), "
                         "set_config('lock_timeout', %s, false)",
                         (f"{max(1, round(self.timeout * 1000))}ms",))
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot use PostgreSQL at {redact(self.url)}: {_line(exc)}") from exc
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        """This handle's connection, replaced first if the server cut it."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self._connect()
        return self._conn

    def _run(self, op: Callable[[psycopg.Connection[Any]], T], retry: bool = True) -> T:
        """``op`` on the connection; if the server cut it meanwhile, once more on a new one
        when ``retry`` (an operation safe to repeat), else the error as it is."""
        conn = self._connection()
        try:
            return op(conn)
        except psycopg.OperationalError:
            if not (retry and (conn.closed or conn.broken)):
                raise
        return op(self._connection())

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        found = conn.execute("SELECT " + ", ".join(f"to_regclass('{t}')" for t in TABLES)).fetchone()
        if found is not None and all(found):
            return
        with conn.transaction():  # CREATE ... IF NOT EXISTS races itself: one at a time
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in SCHEMA:
                conn.execute(statement)

    def _check(self, conn: psycopg.Connection[Any], extra: str = "") -> None:
        """Inside a write's transaction: the fence is this handle's, and stays so until the
        transaction ends (its row is share-locked); else StaleRun."""
        row = conn.execute(f"SELECT run_id, epoch{extra} FROM fence WHERE id = 1 FOR SHARE").fetchone()
        current = Fence(row[0], int(row[1])) if row else None
        if self._fence is None or current != self._fence:
            raise stale(self._fence, current)

    def _fenced(self, write: Callable[[psycopg.Connection[Any]], T], retry: bool = True,
                extra: str = "") -> T:
        """``write`` in one transaction, after checking the fence in it."""
        def op(conn: psycopg.Connection[Any]) -> T:
            with conn.transaction():
                self._check(conn, extra)
                return write(conn)
        return self._run(op, retry)

    # -- the fence -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": self._version, "location": redact(self.url),
                "database": self._database}

    def claim(self, run_id: str) -> Fence:
        # Not retried: a claim that committed before the connection went would count twice.
        row = self._run(lambda c: c.execute(CLAIM, (run_id,)).fetchone(), retry=False)
        assert row is not None
        self._fence = Fence(row[0], int(row[1]))
        return self._fence

    def bind(self, fence: Fence) -> None:
        self._fence = fence

    def fence(self) -> Fence | None:
        row = self._run(lambda c: c.execute(READ_FENCE).fetchone())
        return Fence(row[0], int(row[1])) if row else None

    # -- orders --------------------------------------------------------------------------

    def clear_orders(self) -> None:
        # TRUNCATE is instant where DELETE of a million rows takes seconds, and transactional.
        self._fenced(lambda c: c.execute("TRUNCATE orders"))

    def insert_orders(self, orders: Sequence[Order]) -> None:
        if not orders:
            return
        retried = False

        def op(conn: psycopg.Connection[Any]) -> int:
            nonlocal retried
            again, retried = retried, True
            with conn.transaction():
                self._check(conn)
                if not again:
                    try:
                        with conn.transaction():  # a savepoint: a duplicate undoes only the COPY
                            self._copy(conn, COPY_ORDERS, orders)
                        return len(orders)
                    except pg_errors.UniqueViolation:
                        pass
                inserted = self._insert_unordered(conn, orders)
                if again and inserted == 0 and self._all_stored(conn, orders):
                    return len(orders)  # the lost commit went through: this chunk is in
                return inserted

        inserted = self._run(op)
        if inserted != len(orders):
            raise DuplicateOrderError(inserted, len(orders) - inserted)

    @staticmethod
    def _copy(conn: psycopg.Connection[Any], statement: str, orders: Sequence[Order]) -> None:
        created = {t: datetime.fromtimestamp(t, UTC) for t in {o.created_at for o in orders}}
        with conn.cursor() as cur, cur.copy(statement) as copy:
            write = copy.write_row
            for o in orders:
                write((*o[:8], created[o.created_at]))

    def _insert_unordered(self, conn: psycopg.Connection[Any], orders: Sequence[Order]) -> int:
        """Insert what does not clash with a stored order (seq or id); return how many."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS incoming "
                     "(LIKE orders INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        self._copy(conn, COPY_ORDERS.replace("orders", "incoming", 1), orders)
        columns = ", ".join(ORDER_COLUMNS)
        cur = conn.execute(f"INSERT INTO orders ({columns}) SELECT {columns} FROM incoming "
                           "ORDER BY seq ON CONFLICT DO NOTHING")
        return max(cur.rowcount, 0)

    @staticmethod
    def _all_stored(conn: psycopg.Connection[Any], orders: Sequence[Order]) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM orders o JOIN unnest(%s::bigint[], %s::uuid[]) AS u(seq, id) "
            "ON o.seq = u.seq AND o.id = u.id", ([o.seq for o in orders], [o.id for o in orders]),
        ).fetchone()
        return row is not None and row[0] == len(orders)

    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1,
        job: str | None = None,
    ) -> int:
        if not done:
            return 0
        seqs, starts, ends = zip(*done, strict=True)
        args = (PROCESSED, processed_note(priority), worker, attempt, job, list(seqs),
                list(starts), list(ends), PENDING)
        # Not retried here: a lost commit would make the retry count 0; the job's own retry
        # counts from the store instead.
        return self._fenced(lambda c: max(c.execute(MARK_PROCESSED, args).rowcount, 0),
                            retry=False, extra=NESTED_LOOP)

    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        rows = self._run(lambda c: c.execute(
            "SELECT seq FROM orders WHERE seq > %s AND priority = %s AND status = %s "
            "ORDER BY seq LIMIT %s", (after, priority, PENDING, limit)).fetchall())
        return [seq for (seq,) in rows]

    def delete_pending(self) -> int:
        return self._fenced(lambda c: max(c.execute(
            "DELETE FROM orders WHERE status = %s", (PENDING,)).rowcount, 0))

    def truncate_from(self, seq: int) -> int:
        return self._fenced(lambda c: max(c.execute(
            "DELETE FROM orders WHERE seq >= %s", (seq,)).rowcount, 0))

    def tally(self) -> Tally:
        rows = self._run(lambda c: c.execute(
            "SELECT priority, status, count(*), max(seq) FROM orders GROUP BY priority, status"
        ).fetchall())
        return Tally({(p, s): int(n) for p, s, n, _ in rows},
                     max((int(m) for *_, m in rows), default=-1))

    def ping(self) -> None:
        row = self._run(lambda c: c.execute("SELECT pg_is_in_recovery()").fetchone())
        if row is not None and row[0]:
            raise StoreError(f"PostgreSQL at {redact(self.url)} is a standby (read-only): "
                             "point DATABASE_URL at the primary")

    def verify(self) -> None:
        """A server keeps its database whatever happens to files here: nothing to check."""

    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        sql, args = "SELECT count(*) FROM orders WHERE true", list[str]()
        if priority is not None:
            sql, args = sql + " AND priority = %s", [*args, priority]
        if status is not None:
            sql, args = sql + " AND status = %s", [*args, status]
        row = self._run(lambda c: c.execute(sql, args).fetchone())
        return int(row[0]) if row else 0

    def windows(self) -> dict[str, Window]:
        rows = self._run(lambda c: c.execute(
            f"SELECT priority, count(*), {EPOCH.format('min(started_at)')}, "
            f"{EPOCH.format('max(started_at)')}, {EPOCH.format('min(processed_at)')}, "
            f"{EPOCH.format('max(processed_at)')} FROM orders WHERE status = %s GROUP BY priority",
            (PROCESSED,)).fetchall())
        return {row[0]: Window(int(row[1]), *row[2:]) for row in rows}

    def processed_per_bin(self, since: float, bin_ms: int) -> dict[str, dict[int, int]]:
        rows = self._run(lambda c: c.execute(
            f"SELECT priority, floor(({EPOCH.format('processed_at')} - %s) * 1000.0 / %s)::bigint "
            "AS bin, count(*) FROM orders WHERE status = %s GROUP BY priority, bin",
            (since, bin_ms, PROCESSED)).fetchall())
        out: dict[str, dict[int, int]] = {}
        for priority, b, n in rows:
            bins = out.setdefault(priority, {})
            bins[max(0, int(b))] = bins.get(max(0, int(b)), 0) + int(n)
        return out

    def latency(self, kind: str, percents: Sequence[int] = PERCENTS) -> dict[str, Spread]:
        """One grouped scan: ``percentile_disc`` gives the nearest rank itself (one sort per
        priority, in memory), with count, max and mean beside it."""
        expr = EPOCH.format(f"({LATENCY_SQL[kind]})")

        def op(conn: psycopg.Connection[Any]) -> list[Any]:
            with conn.transaction():
                conn.execute("SELECT set_config('work_mem', %s, true)", (LATENCY_WORK_MEM,))
                return conn.execute(
                    f"SELECT priority, count(*), max(v), avg(v), "
                    f"percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY v) "
                    f"FROM (SELECT priority, {expr} AS v FROM orders WHERE status = %s) t "
                    f"GROUP BY priority", (_fractions(percents), PROCESSED)).fetchall()

        out: dict[str, Spread] = {}
        for priority, n, most, mean, values in self._run(op):
            out[priority] = Spread(int(n), dict(zip(percents, values, strict=True)), most, mean)
        return out

    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        names = [name for name, _ in ORDER_FIELDS]
        rows = self._run(lambda c: c.execute(
            f"SELECT {', '.join(sql for _, sql in ORDER_FIELDS)} FROM orders "
            "WHERE seq = ANY(%s::bigint[]) ORDER BY seq", (list(seqs),)).fetchall())
        return [dict(zip(names, row, strict=True)) for row in rows]

    # -- run records ---------------------------------------------------------------------

    def save_run(self, record: RunRecord, fenced: bool = True) -> None:
        row = (record.run_id, record.started_at or "", json.dumps(record.to_json()))
        if fenced:
            self._fenced(lambda c: c.execute(UPSERT_RUN, row))
        else:
            self._run(lambda c: c.execute(UPSERT_RUN, row))

    def close_run(self, record: RunRecord) -> bool:
        # One statement: inserted, or replacing a record still in an active phase.
        row = (record.run_id, record.started_at or "", json.dumps(record.to_json()), ACTIVE)
        return bool(self._run(lambda c: c.execute(
            UPSERT_RUN + " WHERE process_runs.record->>'phase' = ANY(%s)", row).rowcount))

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._run(lambda c: c.execute(
            "SELECT record::text FROM process_runs WHERE run_id = %s", (run_id,)).fetchone())
        return RunRecord.from_json(json.loads(row[0])) if row else None

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        rows = self._run(lambda c: c.execute(
            "SELECT record::text FROM process_runs ORDER BY started_at DESC, written DESC "
            "LIMIT %s", (limit,)).fetchall())
        return [RunRecord.from_json(json.loads(record)) for (record,) in rows]

    def clear_runs(self) -> None:
        self._run(lambda c: c.execute("DELETE FROM process_runs"))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
