"""Inside a run, not just its totals: throughput over time and per-order latency.

Both are computed by the store at the end of a run, from the timestamps every order keeps
(``createdAt``, ``startedAt``, ``processedAt``): one grouped query for the orders processed
per 100 ms bin and priority, one query per latency (queue wait, service; on SQLite a
histogram to 4 significant digits, see :meth:`SQLiteStore.latency`). Nothing
reads the orders into Python, so the cost grows with what the store does per row.

Measured at 200,000 orders on SQLite (2-core machine): see BENCHMARKS.md, "inside a run";
the record keeps each run's own cost (``timeline.queryMs``, ``latency.queryMs``).

At the end of a run the latency queries run in a thread on a store handle of their own
(:func:`latency_apart`) while the coordinator reads the windows and the bins on its own: the
workers are gone by then and a core is idle, and each query is one scan that the driver runs
without the GIL. Measured at 1,000,000 orders on SQLite: the four scans one after another
2.27-2.36 s, the latency pair beside the other two 1.40-1.45 s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from harness.config import redact
from harness.orders import NORMAL, VIP
from harness.record import Latency, OrderLatency, Percentiles, Timeline, iso
from harness.store import Fence, Store
from harness.store.base import PERCENTS, Spread

log = logging.getLogger("harness")
BIN_MS = 100
# A run longer than MAX_BINS bins gets wider ones (whole multiples of BIN_MS), so that a
# record of an hours-long run stays small.
MAX_BINS = 3_000


def bin_ms_for(total_s: float | None) -> int:
    """100 ms, or the smallest multiple of it that keeps the run within MAX_BINS bins."""
    if not total_s or total_s * 1000 / BIN_MS <= MAX_BINS:
        return BIN_MS
    return BIN_MS * math.ceil(total_s * 1000 / BIN_MS / MAX_BINS)


def timeline(store: Store, since: float, bin_ms: int = BIN_MS) -> Timeline:
    """Orders processed per bin and priority, as dense lists from the run's start."""
    t = time.perf_counter()
    bins = store.processed_per_bin(since, bin_ms)
    query_ms = round((time.perf_counter() - t) * 1000, 1)
    length = max((b + 1 for per in bins.values() for b in per), default=0)

    def dense(priority: str) -> list[int]:
        per = bins.get(priority, {})
        return [per.get(i, 0) for i in range(length)]

    return Timeline(bin_ms=bin_ms, since=iso(since), vip=dense(VIP), normal=dense(NORMAL),
                    query_ms=query_ms)


def _percentiles(spread: Spread | None) -> Percentiles:
    if spread is None:
        return Percentiles()

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None or seconds != seconds else round(seconds * 1000, 3)

    p = spread.percentiles
    return Percentiles(count=spread.count, p50_ms=ms(p.get(50)), p95_ms=ms(p.get(95)),
                       p99_ms=ms(p.get(99)), max_ms=ms(spread.max), mean_ms=ms(spread.mean))


def latency(store: Store) -> Latency:
    """Queue wait and service percentiles per priority."""
    t = time.perf_counter()
    wait, service = store.latency("wait", PERCENTS), store.latency("service", PERCENTS)
    query_ms = round((time.perf_counter() - t) * 1000, 1)
    return Latency(
        vip=OrderLatency(_percentiles(wait.get(VIP)), _percentiles(service.get(VIP))),
        normal=OrderLatency(_percentiles(wait.get(NORMAL)), _percentiles(service.get(NORMAL))),
        query_ms=query_ms)


def _latency_on(open_handle: Callable[[], Store], fence: Fence) -> Latency | None:
    try:
        store = open_handle()
        try:
            found = store.fence()
            if found != fence:  # not the run's store any more (taken over, replaced)
                log.warning("the run's latency was not computed: the store is no longer the "
                            "run's (fence %s)", found)
                return None
            return latency(store)
        finally:
            store.close()
    except Exception as exc:  # the record matters more than these figures
        log.warning("could not compute the run's latency: %s", redact(str(exc)))
        return None


def latency_apart(pool: ThreadPoolExecutor, open_handle: Callable[[], Store],
                  fence: Fence) -> Future[Latency | None]:
    """Start the latency queries in ``pool`` on a handle ``open_handle`` makes in that thread
    (a driver's connection stays in the thread that made it), if the store it opens is still
    under the run's ``fence``; for :func:`inside`."""
    return pool.submit(_latency_on, open_handle, fence)


def inside(store: Store, since: float, total_s: float | None,
           apart: Future[Latency | None] | None = None) -> tuple[Timeline | None, Latency | None]:
    """Both, for the end of a run (the latency from ``apart`` when it was started there); a
    store that fails here costs the run these figures, never its record."""
    try:
        bins: Timeline | None = timeline(store, since, bin_ms_for(total_s))
    except Exception as exc:  # the record matters more than these figures
        log.warning("could not compute the run's timeline: %s", redact(str(exc)))
        bins = None
    if apart is not None:
        return bins, apart.result()
    try:
        return bins, latency(store)
    except Exception as exc:
        log.warning("could not compute the run's latency: %s", redact(str(exc)))
        return bins, None
