"""MongoDB through pymongo: collections ``orders`` and ``process_runs``.

An order's ``_id`` is its ``seq`` (an int), so workers update by the default index; ``id``
(the UUID) has a unique index as in the original service. Inserts are unordered, so one
duplicate does not stop the rest of a chunk; updates are one unordered ``bulk_write`` per
batch, each filtered on ``status: pendente`` so a batch run twice changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pymongo
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.errors import BulkWriteError, ConfigurationError, PyMongoError

from harness.config import redact
from harness.errors import ConfigError
from harness.orders import PENDING, PROCESSED, Order, processed_note
from harness.store.base import Done, DuplicateOrderError, StoreError, Tally, Window

# How a client is made from a URI. Tests swap in an in-process stand-in when no MongoDB
# server is configured; production always uses pymongo's own client.
client_factory: Callable[..., Any] = pymongo.MongoClient
TIME_FIELDS = ("createdAt", "startedAt", "processedAt")
DUPLICATE_KEY = 11000  # MongoDB's E11000 duplicate key error


F = TypeVar("F", bound=Callable[..., Any])


def _reason(exc: Exception) -> str:
    # pymongo appends a long topology description; the first clause says enough.
    return redact(str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0])


def _translated(method: F) -> F:
    """pymongo's errors as StoreError naming the (redacted) server: a server gone mid-run
    fails each call after the store timeout instead of hanging the run."""

    @functools.wraps(method)
    def wrapper(self: MongoStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (StoreError, BulkWriteError):
            raise
        except PyMongoError as exc:
            raise StoreError(f"MongoDB at {redact(self.uri)}: {_reason(exc)}") from exc

    return cast(F, wrapper)


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # pymongo returns naive UTC unless tz_aware
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class MongoStore:
    """Orders and run history in one MongoDB database."""

    backend = "mongo"

    def __init__(self, uri: str, database: str = "orders_harness", timeout: float = 3.0) -> None:
        self.uri = uri
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

    @_translated
    def clear_orders(self) -> None:
        self.orders.drop()
        self._ensure_indexes()

    @_translated
    def insert_orders(self, orders: Sequence[Order]) -> None:
        created = {t: _dt(t) for t in {o.created_at for o in orders}}  # one per chunk
        documents = [
            {
                "_id": o.seq, "id": o.id, "cliente": o.cliente, "valor": o.valor, "tier": o.tier,
                "priority": o.priority, "observacoes": o.observacoes, "status": o.status,
                "createdAt": created[o.created_at],
            }
            for o in orders
        ]
        try:
            self.orders.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            others = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if others:
                raise StoreError(
                    f"MongoDB rejected {len(others)} of {len(documents)} orders: "
                    f"{redact(str(others[0].get('errmsg')))}"
                ) from None
            raise DuplicateOrderError(exc.details.get("nInserted", 0), len(errors)) from None

    @_translated
    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1
    ) -> int:
        if not done:
            return 0
        note = processed_note(priority)
        result = self.orders.bulk_write(
            [
                UpdateOne(
                    {"_id": seq, "status": PENDING},
                    {"$set": {"status": PROCESSED, "observacoes": note, "worker": worker,
                              "startedAt": _dt(start), "processedAt": _dt(end),
                              "attempts": attempt}},
                )
                for seq, start, end in done
            ],
            ordered=False,
        )
        return result.modified_count

    @_translated
    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        cursor = (
            self.orders.find(
                {"priority": priority, "status": PENDING, "_id": {"$gt": after}}, {"_id": 1}
            )
            .sort("_id", ASCENDING)
            .limit(limit)
        )
        return [doc["_id"] for doc in cursor]

    @_translated
    def delete_pending(self) -> int:
        return int(self.orders.delete_many({"status": PENDING}).deleted_count)

    @_translated
    def truncate_from(self, seq: int) -> int:
        return int(self.orders.delete_many({"_id": {"$gte": seq}}).deleted_count)

    @_translated
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

    @_translated
    def ping(self) -> None:
        self._db.command("ping")

    @_translated
    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        query = {k: v for k, v in (("priority", priority), ("status", status)) if v is not None}
        return self.orders.count_documents(query)

    @_translated
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

    @_translated
    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        docs = self.orders.find({"_id": {"$in": list(seqs)}}).sort("_id", ASCENDING)
        out = []
        for doc in docs:
            doc["seq"] = doc.pop("_id")
            for name in TIME_FIELDS:
                doc[name] = _seconds(doc.get(name))
            doc.setdefault("worker", None)
            doc.setdefault("attempts", None)
            out.append(doc)
        return out

    @_translated
    def save_run(self, record: dict[str, Any]) -> None:
        self.runs.replace_one({"_id": record["runId"]}, {**record, "_id": record["runId"]},
                              upsert=True)

    @_translated
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        doc = self.runs.find_one({"_id": run_id})
        if doc is not None:
            doc.pop("_id")
        return doc

    @_translated
    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        cursor = self.runs.find({}, {"_id": 0}).sort("startedAt", DESCENDING)
        if limit is not None:
            cursor = cursor.limit(limit)
        return list(cursor)

    @_translated
    def clear_runs(self) -> None:
        self.runs.delete_many({})

    def close(self) -> None:
        self._client.close()
