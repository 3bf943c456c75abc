"""The one small interface both stores implement, and the types it speaks.

Times cross this interface as Unix seconds (floats); each backend stores them in its
natural form (SQLite REAL, BSON dates in MongoDB). Orders are addressed by ``seq``, their
position in the run, because an integer key is what makes batched updates cheap on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.errors import StoreError
from harness.orders import Order


class DuplicateOrderError(StoreError):
    """An insert met ids already stored. The other orders of the chunk *were* inserted."""

    def __init__(self, inserted: int, duplicates: int) -> None:
        super().__init__(f"{duplicates} duplicate order id(s) rejected, {inserted} inserted")
        self.inserted = inserted
        self.duplicates = duplicates


@dataclass(frozen=True)
class Window:
    """When one priority's orders were processed, read from the stored orders."""

    count: int
    first_started: float | None
    last_started: float | None
    first_processed: float | None
    last_processed: float | None


# A processed order as a worker reports it: (seq, started_at, processed_at).
Done = tuple[int, float, float]


@dataclass(frozen=True)
class Tally:
    """What the store holds, counted in one pass: how a resumed run learns where it stopped."""

    counts: dict[tuple[str, str], int]  # (priority, status) -> orders
    max_seq: int  # -1 when there are no orders

    def count(self, priority: str | None = None, status: str | None = None) -> int:
        return sum(n for (p, s), n in self.counts.items()
                   if priority in (None, p) and status in (None, s))


class Store(Protocol):
    """What the pipeline, the workers and the run history need from a database."""

    backend: str

    def describe(self) -> dict[str, Any]:
        """Backend name, server version and location (passwords redacted)."""

    def clear_orders(self) -> None:
        """Drop every order: a run starts from an empty ``orders`` collection."""

    def insert_orders(self, orders: Sequence[Order]) -> None:
        """Insert unordered; raise DuplicateOrderError after inserting all the others."""

    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1
    ) -> int:
        """Move the given orders from pendente to processado; return how many moved.

        Orders already processed are left alone, so a batch run twice counts once. Each
        moved order keeps ``attempt``: which try of its batch processed it (1 = the first).
        """

    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        """Up to ``limit`` pending seqs of ``priority`` greater than ``after``, ascending."""

    def delete_pending(self) -> int:
        """Delete every order still pendente (a cancelled run's unprocessed orders); return
        how many went. Processed orders stay."""

    def truncate_from(self, seq: int) -> int:
        """Delete orders from ``seq`` on (a chunk a crash left half-inserted); return how many."""

    def tally(self) -> Tally:
        """Orders per (priority, status) and the highest seq; a scan, so never on a status path."""

    def ping(self) -> None:
        """Raise StoreError, within the store timeout, unless the store can take a write now."""

    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        """Count orders; a scan, so never on a status path."""

    def windows(self) -> dict[str, Window]:
        """Per priority, the processing window of its processed orders."""

    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        """Orders as documents (``createdAt``, ``processedAt`` ... as Unix seconds)."""

    def save_run(self, record: dict[str, Any]) -> None:
        """Insert or replace the ``process_runs`` record with this ``runId``."""

    def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Run records, newest first."""

    def clear_runs(self) -> None: ...

    def close(self) -> None: ...
