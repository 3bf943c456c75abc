"""The one small interface every store implements, the types it speaks, and the one
translation of drivers' errors (:func:`map_exceptions`).

Times cross this interface as Unix seconds (floats); each backend stores them in its
natural form (SQLite REAL, PostgreSQL timestamptz, BSON dates in MongoDB). Orders are
addressed by ``seq``, their position in the run, because an integer key is what makes
batched updates cheap on all of them.

**The fence.** The ``orders`` collection holds one run at a time, and a process that was
paused past its lock (SIGSTOP, a frozen VM) wakes up believing it still owns it. So the
store keeps a fence: the run (and epoch: a resume starts a new one) that owns the orders.
A writer claims it (:meth:`Store.claim`), and every write to the orders, and every record
write of a coordinator, checks it: in the same transaction (SQLite, PostgreSQL), or in the same
single-document filter where MongoDB allows one (updates carry the run; record writes the
epoch; inserts are checked before and after, see :mod:`harness.store.mongo` for the windows
left without transactions). A writer whose fence is no longer current gets StaleRun.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

# Re-exported: their home is harness.datatypes, the leaf module.
from harness.datatypes import Fence as Fence
from harness.datatypes import Spread as Spread
from harness.datatypes import Tally as Tally
from harness.datatypes import Window as Window
from harness.errors import HarnessError, StaleRun, StoreError
from harness.orders import Order

if TYPE_CHECKING:
    from harness.record import RunRecord


class DuplicateOrderError(StoreError):
    """An insert met ids already stored. The other orders of the chunk *were* inserted."""

    def __init__(self, inserted: int, duplicates: int) -> None:
        super().__init__(f"{duplicates} duplicate order id(s) rejected, {inserted} inserted")
        self.inserted = inserted
        self.duplicates = duplicates


def stale(mine: Fence | None, current: Fence | None) -> StaleRun:
    """The error of a write refused by the fence."""
    if mine is None:
        return StaleRun("this store handle has claimed no fence; a writer claims one first "
                        "(Store.claim)")
    return StaleRun(f"{mine} no longer owns the store: "
                    f"{current if current is not None else 'nobody'} does; nothing was written")


# A processed order as a worker reports it: (seq, started_at, processed_at).
Done = tuple[int, float, float]

PERCENTS = (50, 95, 99)


def rank(percent: int, count: int) -> int:
    """The nearest rank (1-based) of ``percent`` among ``count`` values: ceil(p * n / 100)."""
    return max(1, (percent * count + 99) // 100)


class Store(Protocol):
    """What the pipeline, the workers and the run history need from a database."""

    backend: str

    def describe(self) -> dict[str, Any]:
        """Backend name, server version and location (passwords redacted)."""

    def claim(self, run_id: str) -> Fence:
        """Make ``run_id`` the owner of the orders, atomically, and bind this handle to it.

        The epoch is the current one + 1 when ``run_id`` already owns them (a resume, or a
        takeover finishing that run: either way its older processes are fenced out), else 0.
        """

    def bind(self, fence: Fence) -> None:
        """Write for ``fence`` from now on (a worker, for the job it runs); claims nothing."""

    def fence(self) -> Fence | None:
        """Who owns the orders now."""

    def clear_orders(self) -> None:
        """Drop every order: a run starts from an empty ``orders`` collection. Fenced."""

    def insert_orders(self, orders: Sequence[Order]) -> None:
        """Insert unordered; raise DuplicateOrderError after inserting all the others. Fenced."""

    def mark_processed(
        self, priority: str, done: Sequence[Done], worker: str, attempt: int = 1,
        job: str | None = None,
    ) -> int:
        """Move the given orders from pendente to processado; return how many moved. Fenced.

        Orders already processed are left alone, so a batch run twice counts once. Each
        moved order keeps ``attempt``: which try of its batch processed it (1 = the first),
        and ``job``: the queue job that processed it, so that a job counts the orders it
        processed itself, whatever other job (a batch enqueued again) took the others.
        """

    def pending_seqs(self, priority: str, after: int, limit: int) -> list[int]:
        """Up to ``limit`` pending seqs of ``priority`` greater than ``after``, ascending."""

    def delete_pending(self) -> int:
        """Delete every order still pendente (a cancelled run's unprocessed orders); return
        how many went. Processed orders stay. Fenced."""

    def truncate_from(self, seq: int) -> int:
        """Delete orders from ``seq`` on (a chunk a crash left half-inserted); return how
        many. Fenced."""

    def tally(self) -> Tally:
        """Orders per (priority, status) and the highest seq; a scan, so never on a status path."""

    def ping(self) -> None:
        """Raise StoreError, within the store timeout, unless the store can take a write now."""

    def verify(self) -> None:
        """Raise StoreError if this handle no longer reaches the store it opened (SQLite:
        the database file was removed or replaced while the run went on)."""

    def count_orders(self, priority: str | None = None, status: str | None = None) -> int:
        """Count orders; a scan, so never on a status path."""

    def windows(self) -> dict[str, Window]:
        """Per priority, the processing window of its processed orders."""

    def processed_per_bin(self, since: float, bin_ms: int) -> dict[str, dict[int, int]]:
        """Per priority, how many orders were processed in each bin of ``bin_ms`` from
        ``since`` (bin i: [since + i*bin, since + (i+1)*bin)); empty bins are left out.
        One grouped query: what the run's throughput-over-time chart shows."""

    def latency(self, kind: str, percents: Sequence[int] = PERCENTS) -> dict[str, Spread]:
        """Per priority, the :class:`Spread` of ``kind`` ("wait": createdAt -> startedAt,
        "service": startedAt -> processedAt) over its processed orders, computed in the
        store (never by reading every order into Python)."""

    def get_orders(self, seqs: Sequence[int]) -> list[dict[str, Any]]:
        """Orders as documents (``createdAt``, ``processedAt`` ... as Unix seconds; ``job``
        and ``worker`` None until processed)."""

    def save_run(self, record: RunRecord, fenced: bool = True) -> None:
        """Insert or replace the record with its ``runId``. ``fenced``: only while this
        handle's fence is current (a coordinator's checkpoints and its end); unfenced is for
        records no run's coordinator writes (a sweep point that failed to start)."""

    def close_run(self, record: RunRecord) -> bool:
        """Save ``record`` only if the stored one is missing or not final (still in an
        active phase), atomically; return whether it was saved. How a run's end is written
        by someone other than its owner (a stale coordinator closing its own record, or a
        takeover), so that a final record is never overwritten."""

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Run records, newest first."""

    def clear_runs(self) -> None: ...

    def close(self) -> None: ...


# -- errors: one translation for every backend ------------------------------------------------

ErrorMap = Mapping[type[BaseException], "Callable[[BaseException], HarnessError] | None"]


@contextmanager
def map_exceptions(mapping: ErrorMap) -> Iterator[None]:
    """Translate a driver's exceptions into the harness's own, as httpx's ``map_exceptions``
    turns httpcore's into httpx's: the first entry of ``mapping`` that the exception is an
    instance of makes the error raised instead (None: raise it unchanged). The harness's own
    errors (StaleRun, DuplicateOrderError ...) and anything unmapped pass as they are."""
    try:
        yield
    except HarnessError:
        raise
    except Exception as exc:
        for kind, make in mapping.items():
            if isinstance(exc, kind):
                if make is None:
                    raise
                raise make(exc) from exc
        raise


S = TypeVar("S")
# The Store methods a backend's driver errors may escape from: all but bind, which only
# remembers a fence.
TRANSLATED = tuple(name for name, value in vars(Store).items()
                   if callable(value) and not name.startswith("_") and name != "bind")


def translating(cls: type[S]) -> type[S]:
    """Class decorator: every Store method of ``cls`` runs under :func:`map_exceptions` with
    the handle's own ``error_map()`` (its driver's errors as StoreError naming the store,
    password redacted). What a backend adds is its map, not a wrapper of its own."""
    for name in TRANSLATED:
        method = cls.__dict__.get(name)
        if method is None:
            continue

        def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(method)
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                with map_exceptions(self.error_map()):
                    return method(self, *args, **kwargs)
            return wrapper

        setattr(cls, name, wrap(method))
    return cls
