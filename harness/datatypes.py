"""Plain data every layer shares: a run's phases, who holds the run lock, who owns the
store's orders (the fence), and what the store reports (windows, tallies, latency spreads).

A leaf: it imports nothing of the harness, so ``record`` and ``store.base``, and ``errors``
and ``lock``, no longer import each other. Each type is re-exported where it used to live
(``harness.state.Phase``, ``harness.lock.LockHolder``, ``harness.store.Fence`` ...), so
imports written against those modules keep working.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    IDLE = "IDLE"
    GENERATING = "GENERATING"
    WAITING_VIP_DRAIN = "WAITING_VIP_DRAIN"
    ENQUEUE_NORMAL = "ENQUEUE_NORMAL"
    WAITING_NORMAL_DRAIN = "WAITING_NORMAL_DRAIN"
    DONE = "DONE"
    ABORTED = "ABORTED"
    ERROR = "ERROR"


ACTIVE_PHASES = frozenset({
    Phase.GENERATING, Phase.WAITING_VIP_DRAIN, Phase.ENQUEUE_NORMAL, Phase.WAITING_NORMAL_DRAIN,
})

# Lock holders that are not runs: their ids start with these.
MAINTENANCE_HOLDERS = ("reset-", "bench-")


@dataclass(frozen=True)
class LockHolder:
    """Who holds the run lock: the run and its coordinator process."""

    run_id: str
    host: str
    pid: int

    @classmethod
    def mine(cls, run_id: str) -> LockHolder:
        return cls(run_id, socket.gethostname(), os.getpid())

    @classmethod
    def parse(cls, value: str) -> LockHolder:
        run_id, _, rest = value.partition(" ")
        host, _, pid = rest.rpartition(":")
        return cls(run_id, host or "?", int(pid) if pid.isdigit() else 0)

    def __str__(self) -> str:
        return f"{self.run_id} {self.host}:{self.pid}"

    @property
    def is_run(self) -> bool:
        """False for the short holds of `harness reset` and `harness bench`: not cancellable."""
        return not self.run_id.startswith(MAINTENANCE_HOLDERS)

    def is_dead(self) -> bool:
        return process_is_dead(self.host, self.pid)


def process_is_dead(host: str | None, pid: int | None) -> bool:
    """True only when provably dead: on this host, and no such process."""
    if host != socket.gethostname() or not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Fence:
    """Who owns the orders: a run and its epoch."""

    run_id: str
    epoch: int

    def __str__(self) -> str:
        return f"run {self.run_id} (epoch {self.epoch})"


@dataclass(frozen=True)
class Window:
    """When one priority's orders were processed, read from the stored orders."""

    count: int
    first_started: float | None
    last_started: float | None
    first_processed: float | None
    last_processed: float | None


@dataclass(frozen=True)
class Spread:
    """One latency over one priority's processed orders, in seconds: nearest-rank
    percentiles (the value at rank ceil(p/100 * count) in ascending order), max and mean."""

    count: int
    percentiles: dict[int, float]
    max: float
    mean: float


@dataclass(frozen=True)
class Tally:
    """What the store holds, counted in one pass: how a resumed run learns where it stopped."""

    counts: dict[tuple[str, str], int]  # (priority, status) -> orders
    max_seq: int  # -1 when there are no orders

    def count(self, priority: str | None = None, status: str | None = None) -> int:
        return sum(n for (p, s), n in self.counts.items()
                   if priority in (None, p) and status in (None, s))
