"""One sweep at a time: a lock in Redis held for as long as a sweep runs.

Two papermill sweeps at once interfere: their kernels' connections collided ("Invalid
Signature" errors, one point hung 60 s waiting for a kernel), and their runs fight over the
one-run-at-a-time lock. So a sweep takes this lock before it writes anything and a second
sweep is refused at once, naming the first. The lock expires ``TTL_S`` after its holder
stops refreshing it (a thread refreshes it every ``REFRESH_S``), and a holder that provably
died on this host (no such process) is taken over at once, as with the run lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError

from harness.config import redact
from harness.errors import SweepActive
from harness.lock import REFRESH_LOCK, RELEASE_LOCK, LockHolder

log = logging.getLogger("harness")
KEY = "harness:sweep-lock"
TTL_S = 30
REFRESH_S = 5


def acquire(conn: Redis, sweep_id: str) -> LockHolder:
    """Take the sweep lock for ``sweep_id`` (this process), or raise SweepActive naming the
    sweep that holds it."""
    me = LockHolder.mine(sweep_id)
    for _ in range(3):  # the holder may expire, or be found dead, in between
        if conn.set(KEY, str(me), nx=True, ex=TTL_S):
            return me
        value = conn.get(KEY)
        if value is None:
            continue
        holder = LockHolder.parse(value.decode() if isinstance(value, bytes) else value)
        if not holder.is_dead():
            raise SweepActive(
                f"sweep {holder.run_id} is running (process {holder.host}:{holder.pid}); two "
                "sweeps at once disturb each other's kernels and runs: wait for it, or stop it "
                f"(its lock expires {TTL_S}s after its process is gone)", holder)
        log.warning("sweep %s (process %s:%d) died; taking over its lock", holder.run_id,
                    holder.host, holder.pid)
        conn.register_script(RELEASE_LOCK)(keys=[KEY], args=[str(holder)])
    raise SweepActive("could not take the sweep lock; try again")


def release(conn: Redis, me: LockHolder) -> None:
    """Free the lock if it is still ours."""
    conn.register_script(RELEASE_LOCK)(keys=[KEY], args=[str(me)])


@contextmanager
def sweep_lock(conn: Redis, sweep_id: str) -> Iterator[LockHolder]:
    """Hold the sweep lock while the block runs: refreshed by a thread, released at the end
    whatever happens (Ctrl-C included)."""
    me = acquire(conn, sweep_id)
    stop = threading.Event()
    refresh = conn.register_script(REFRESH_LOCK)

    def keep() -> None:
        while not stop.wait(REFRESH_S):
            try:
                if not refresh(keys=[KEY], args=[str(me), TTL_S]):
                    log.warning("sweep %s lost its lock (expired while Redis was away?)", sweep_id)
            except RedisError as exc:
                log.warning("sweep %s could not refresh its lock: %s", sweep_id, redact(str(exc)))

    thread = threading.Thread(target=keep, name=f"sweep-lock-{sweep_id}", daemon=True)
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        thread.join()
        try:
            release(conn, me)
        except RedisError as exc:  # Redis gone: the lock goes with it, or expires
            log.warning("could not release the sweep lock: %s", redact(str(exc)))
