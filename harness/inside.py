"""Inside a run, not just its totals: throughput over time and per-order latency.

Both are computed by the store at the end of a run, from the timestamps every order keeps
(``createdAt``, ``startedAt``, ``processedAt``): one grouped query for the orders processed
per 100 ms bin and priority, one query per latency (queue wait, service; on SQLite a
histogram to 4 significant digits, see :meth:`SQLiteStore.latency`). Nothing
reads the orders into Python, so the cost grows with what the store does per row.

Measured at 200,000 orders on SQLite (2-core machine): see BENCHMARKS.md, "inside a run";
the record keeps each run's own cost (``timeline.queryMs``, ``latency.queryMs``).
"""

from __future__ import annotations

import logging
import math
import time

from harness.config import redact
from harness.orders import NORMAL, VIP
from harness.record import Latency, OrderLatency, Percentiles, Timeline, iso
from harness.store import Store
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


def inside(store: Store, since: float, total_s: float | None) -> tuple[Timeline | None, Latency | None]:
    """Both, for the end of a run; a store that fails here costs the run these figures,
    never its record."""
    try:
        return timeline(store, since, bin_ms_for(total_s)), latency(store)
    except Exception as exc:  # the record matters more than these figures
        log.warning("could not compute the run's timeline and latency: %s", redact(str(exc)))
        return None, None
