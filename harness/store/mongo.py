"""MongoDB through pymongo: collections ``orders``, ``process_runs`` and ``fence``.

An order's ``_id`` is its ``seq`` (an int), so workers update by the default index; ``id``
(the UUID) has a unique index as in the original service. Inserts are unordered, so one
duplicate does not stop the rest of a chunk; updates are one unordered ``bulk_write`` per
batch, each filtered on ``status: pendente`` so a batch run twice changes nothing.

The fence (see :mod:`harness.store.base`) without multi-document transactions (they need a
replica set), so weaker than SQLite's in small windows, said here as they are:

- every order carries its run and epoch; updates and deletes of orders filter on the run,
  so a stale process's write matches nothing of another run's, atomically per document;
- an insert cannot filter: it checks the fence before and after, and when the fence moved
  meanwhile takes back exactly the documents it wrote (its run *and* epoch) and refuses.
  Between its check and its insert, a new owner's insert of the same seqs may meet its
  documents as duplicates (that run then ends ERROR, nothing lost, `harness resume` goes on);
- a coordinator's record write replaces only a record no later epoch wrote (one filter);
- dropping the orders re-checks the fence after the drop: a coordinator paused exactly
  between its check and its drop would drop its successor's first orders, and say so.

Also open: a stale process of the *same* run (an older epoch, after a resume) updating that
run's orders between the worker's check in Redis and its write: harmless to the data (an
order still moves once), it can leave a processed order uncounted, which the run reports as
unaccounted-for and a resume finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, ConfigurationError, DuplicateKeyError, PyMongoError

from harness.config import redact
from harness.errors import ConfigError
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

# How a client is made from a URI. Tests swap in an in-process stand-in when no MongoDB
# server is configured; production always uses pymongo's own client.
client_factory: Callable[..., Any] = pymongo.MongoClient
TIME_FIELDS = ("createdAt", "startedAt", "processedAt")
# Latencies as date differences, which MongoDB gives in milliseconds (BSON dates hold ms).
LATENCY_EXPR = {"wait": {"$subtract": ["$startedAt", "$createdAt"]},
                "service": {"$subtract": ["$processedAt", "$startedAt"]}}
DUPLICATE_KEY = 11000  # MongoDB's E11000 duplicate key error


def _reason(exc: Exception) -> str:
    # pymongo appends a long topology description; the first clause says enough.
    return redact(str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0])


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # pymongo returns naive UTC unless tz_aware
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@translating
class MongoStore:
    """Orders and run history in one MongoDB database."""

    backend = "mongo"

    def __init__(self, uri: str, database: str = "orders_harness", timeout: float = 3.0) -> None:
        self.uri = uri
        self._fence: Fence | None = None
        timeout_ms = int(timeout * 1000)
        try:
            self._client = client_factory(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
            )
        except (ConfigurationError, ValueError) as exc:  # pymongo's URI parser (InvalidURI too)
            if "DNS" not in str(exc):  # an SRV name that does not resolve is unreachable instead
                raise ConfigError(f"MONGO_URI / --mongo-uri {redact(uri)!r} is not a usable "
                                  f"MongoDB URI: {_reason(exc)}", "mongo_uri") from None
            raise StoreError(f"cannot reach MongoDB at {redact(uri)}: {_reason(exc)}") from exc
        try:
            self._db = self._client.get_default_database(database)
            self._server_version = self._client.server_info().get("version", "unknown")
            self._ensure_indexes()
        except PyMongoError as exc:
            raise StoreError(f"cannot reach MongoDB at {redact(uri)}: {_reason(exc)}") from exc
        self.orders = self._db["orders"]
        self.runs = self._db["process_runs"]
        self.fences = self._db["fence"]

    def error_map(self) -> ErrorMap:
        """pymongo's errors as StoreError naming the (redacted) server: a server gone mid-run
        fails each call after the store timeout instead of hanging the run. A
        BulkWriteError is the insert's own to read (duplicates), so it passes as it is."""
        return {BulkWriteError: None, PyMongoError: lambda exc: StoreError(
            f"MongoDB at {redact(self.uri)}: {_reason(exc)}")}

    def _ensure_indexes(self) -> None:
        orders = self._db["orders"]
        orders.create_index("id", unique=True, name="id_unique")
        orders.create_index("priority", name="priority")
        # (priority, status) with _id last: pages of pending NORMAL ids come out in _id order
        # from the index, instead of sorting every pending order for each page.
        orders.create_index(
            [("priority", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)],
            name="priority_status",
        )
        orders.create_index("createdAt", name="createdAt")
        self._db["process_runs"].create_index([("startedAt", DESCENDING)], name="startedAt")

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "version": self._server_version,
                "location": redact(self.uri), "database": self._db.name}

    def _read_fence(self) -> Fence | None:
        doc = self.fences.find_one({"_id": "orders"})
        return Fence(doc["runId"], int(doc["epoch"])) if doc else None

    def _check(self) -> Fence:
        """The fence this handle writes for, if it is still current; else StaleRun."""
        current = self._read_fence()
        if self._fence is None or current != self._fence:
            raise stale(self._fence, current)
        return self._fence

    def claim(self, run_id: str) -> Fence:
        for _ in range(100):  # compare-and-set: retried only when another claim came between
            current = self._read_fence()
            fence = Fence(run_id, current.epoch + 1 if current and current.run_id == run_id else 0)
            new = {"runId": fence.run_id, "epoch": fence.epoch}
            if current is None:
                try:
                    self.fences.insert_one({"_id": "orders", **new})
                except DuplicateKeyError:
                    continue
            elif not self.fences.update_one(
                {"_id": "orders", "runId": current.run_id, "epoch": current.epoch}, {"$set": new}
            ).matched_count:
                continue
            self._fence = fence
            return fence
        raise StoreError(f"MongoDB at {redact(self.uri)}: could not claim the fence")

    def bind(self, fence: Fence) -> None:
        self._fence = fence

    def fence(self) -> Fence | None:
        return self._read_fence()

    def verify(self) -> None:
        """A server keeps its database whatever happens to files here: nothing to check."""

    def clear_orders(self) -> None:
        fence = self._check()
        self.orders.drop()
        self._ensure_indexes()
        if self._read_fence() != fence:  # claimed meanwhile: say so, the new owner clears again
            raise stale(fence, self._read_fence())

    def insert_orders(self, orders: Sequence[Order]) -> None:
        fence = self._check()
        created = {t: _dt(t) for t in {o.created_at for o in orders}}  # one per chunk
        documents = [
            {
                "_id": o.seq, "id": o.id, "cliente": o.cliente, "valor": o.valor, "tier": o.tier,
                "priority": o.priority, "observacoes": o.observacoes, "status": o.status,
                "createdAt": created[o.created_at], "run": fence.run_id, "epoch": fence.epoch,
            }
            for o in orders
        ]
        try:
            self._insert_fenced(documents)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if others:
                raise StoreError(
                    f"MongoDB rejected {len(others)} of {len(documents)} orders: "
                    f"{redact(str(others[0].get('errmsg')))}"
                ) from None
            raise DuplicateOrderError(exc.details.get("nInserted", 0), len(errors)) from None

    def _insert_fenced(self, documents: list[dict[str, Any]]) -> None:
        """Insert, then check that the fence did not move meanwhile; if it did, take back
        exactly what this insert put in (the documents it wrote, tagged with its run *and*
        epoch: never another epoch's same seqs) and refuse."""
        fence = self._fence
        assert fence is not None
        failed: set[int] = set()
        try:
            self.orders.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            failed = {e.get("index", -1) for e in exc.details.get("writeErrors", [])}
            raise
        finally:
            if self._read_fence() != fence:
                mine = [d["_id"] for i, d in enumerate(documents) if i not in failed]
                self.orders.delete_many({"_id": {"$in": mine}, "run": fence.run_id,
                                         "epoch": fence.epoch})
                raise stale(fence, self._read_fence())

    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1,
        job: str | None = None,
    ) -> int:
        if not done:
            return 0
        fence = self._check()
        note = processed_note(priority)
        result = self.orders.bulk_write(
            [
                UpdateOne(
                    {"_id": seq, "status": PENDING, "run": fence.run_id},
                    {"$set": {"status": PROCESSED, "observacoes": note, "worker": worker,
                              "startedAt": _dt(start), "processedAt": _dt(end),
                              "attempts": attempt, "job": job}},
                )
                for seq, start, end in done
            ],
            ordered=False,
        )
        return result.modified_count

    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        cursor = (
            self.orders.find(
                {"priority": priority, "status": PENDING, "_id": {"$gt": after}}, {"_id": 1}
            )
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        return [doc["_id"] for doc in cursor]

    def delete_pending(self) -> int:
        run = self._check().run_id
        return int(self.orders.delete_many({"status": PENDING, "run": run}).deleted_count)

    def truncate_from(self, seq: int) -> int:
        run = self._check().run_id
        return int(self.orders.delete_many({"_id": {"$gte": seq}, "run": run}).deleted_count)

    def tally(self) -> Tally:
        rows = self.orders.aggregate([
            {"$group": {"_id": {"p": "$priority", "s": "$status"}, "n": {"$sum": 1},
                        "max": {"$max": "$_id"}}},
        ])
        counts, max_seq = {}, -1
        for row in rows:
            counts[(row["_id"]["p"], row["_id"]["s"])] = row["n"]
            max_seq = max(max_seq, row["max"])
        return Tally(counts, max_seq)

    def ping(self) -> None:
        self._db.command("ping")

    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        query = {k: v for k, v in (("priority", priority), ("status", status)) if v is not None}
        return self.orders.count_documents(query)

    def windows(self) -> dict[str, Window]:
        rows = self.orders.aggregate([
            {"$match": {"status": PROCESSED}},
            {"$group": {
                "_id": "$priority", "count": {"$sum": 1},
                "firstStarted": {"$min": "$startedAt"}, "lastStarted": {"$max": "$startedAt"},
                "firstProcessed": {"$min": "$processedAt"},
                "lastProcessed": {"$max": "$processedAt"},
            }},
        ])
        return {
            row["_id"]: Window(
                row["count"], _seconds(row["firstStarted"]), _seconds(row["lastStarted"]),
                _seconds(row["firstProcessed"]), _seconds(row["lastProcessed"]),
            )
            for row in rows
        }

    def processed_per_bin(self, since: float, bin_ms: int) -> dict[str, dict[int, int]]:
        origin = _dt(since).replace(tzinfo=None)  # naive UTC, as pymongo returns dates
        rows = self.orders.aggregate([
            {"$match": {"status": PROCESSED}},
            {"$group": {"_id": {"p": "$priority", "b": {"$floor": {"$divide": [
                {"$subtract": ["$processedAt", origin]}, bin_ms]}}}, "n": {"$sum": 1}}},
        ])
        out: dict[str, dict[int, int]] = {}
        for row in rows:
            b = max(0, int(row["_id"]["b"]))
            bins = out.setdefault(row["_id"]["p"], {})
            bins[b] = bins.get(b, 0) + int(row["n"])
        return out

    def latency(self, kind: str, percents: Sequence[int] = PERCENTS) -> dict[str, Spread]:
        """Count, max and mean per priority in one $group; then each percentile as
        $sort + $skip to its nearest rank (the stand-in has neither $percentile nor
        $setWindowFields, and $percentile is approximate where it exists)."""
        value = LATENCY_EXPR[kind]
        match = {"status": PROCESSED}
        groups = list(self.orders.aggregate([
            {"$match": match},
            {"$group": {"_id": "$priority", "n": {"$sum": 1}, "max": {"$max": value},
                        "mean": {"$avg": value}}},
        ]))
        out: dict[str, Spread] = {}
        for group in groups:
            priority, n = group["_id"], int(group["n"])
            picked: dict[int, float] = {}
            for p in percents:
                row = next(self.orders.aggregate([
                    {"$match": {**match, "priority": priority}},
                    {"$project": {"_id": 0, "v": value}},
                    {"$sort": {"v": ASCENDING}}, {"$skip": rank(p, n) - 1}, {"$limit": 1},
                ], allowDiskUse=True), None)
                picked[p] = row["v"] / 1000 if row else float("nan")
            out[priority] = Spread(n, picked, group["max"] / 1000, group["mean"] / 1000)
        return out

    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        docs = self.orders.find({"_id": {"$in": list(seqs)}}).sort("_id", ASCENDING)
        out = []
        for doc in docs:
            doc["seq"] = doc.pop("_id")
            for name in TIME_FIELDS:
                doc[name] = _seconds(doc.get(name))
            doc.setdefault("worker", None)
            doc.setdefault("attempts", None)
            doc.setdefault("job", None)
            out.append(doc)
        return out

    def save_run(self, record: RunRecord, fenced: bool = True) -> None:
        """Fenced: checked, then written only over a record no later epoch of the run wrote
        (``_fence`` kept beside the record, one single-document filter), so a coordinator
        paused between its check and its write cannot overwrite its resumed self's record."""
        doc = {**record.to_json(), "_id": record.run_id}
        if not fenced:
            self.runs.replace_one({"_id": record.run_id}, doc, upsert=True)
            return
        fence = self._check()
        try:
            self.runs.replace_one(
                {"_id": record.run_id, "$or": [{"_fence": {"$exists": False}},
                                               {"_fence": {"$lte": fence.epoch}}]},
                {**doc, "_fence": fence.epoch}, upsert=True)
        except DuplicateKeyError:  # a later epoch's record is there: not ours to replace
            raise stale(fence, self._read_fence()) from None

    def close_run(self, record: RunRecord) -> bool:
        # One document: a replace filtered on "not final" is atomic; the upsert covers a
        # record never saved (a DuplicateKeyError then means a final one came between).
        active = [p.value for p in ACTIVE_PHASES]
        try:
            result = self.runs.replace_one(
                {"_id": record.run_id, "phase": {"$in": active}},
                {**record.to_json(), "_id": record.run_id}, upsert=True)
        except DuplicateKeyError:
            return False
        return bool(result.matched_count or result.upserted_id is not None)

    def get_run(self, run_id: str) -> RunRecord | None:
        doc = self.runs.find_one({"_id": run_id})
        if doc is None:
            return None
        doc.pop("_id")
        doc.pop("_fence", None)
        return RunRecord.from_json(doc)

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        cursor = self.runs.find({}, {"_id": 0, "_fence": 0}).sort("startedAt", DESCENDING)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [RunRecord.from_json(doc) for doc in cursor]

    def clear_runs(self) -> None:
        self.runs.delete_many({})

    def close(self) -> None:
        self._client.close()
