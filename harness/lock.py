"""The one-run-at-a-time lock in Redis, and who holds it.

A run's coordinator holds the lock for the whole run and refreshes it every few seconds; a
coordinator that dies frees it within ``LOCK_TTL_S``. The holder is written as
``<run id> <host>:<pid>`` so that a process on the same host can prove the holder dead (no
such process) and take over at once instead of waiting for the lock to expire (see
:mod:`harness.takeover`, which also decides what happens to the dead holder's run).

The lock only says who *should* be writing; a coordinator paused past its lock (SIGSTOP, a
VM freeze) still believes it holds it. What keeps such a process from writing into the next
run is the store's fence (:meth:`harness.store.Store.claim`), checked with every write.
"""

from __future__ import annotations

from redis import Redis

# Re-exported: their home is harness.datatypes, the leaf module.
from harness.datatypes import MAINTENANCE_HOLDERS as MAINTENANCE_HOLDERS
from harness.datatypes import LockHolder as LockHolder
from harness.datatypes import process_is_dead as process_is_dead
from harness.errors import RunActive

LOCK_KEY = "harness:lock"
# A coordinator refreshes its lock every few seconds; one that died frees it after this.
LOCK_TTL_S = 30

RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RunLock:
    """The lock's operations; each is one round trip."""

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self._release = conn.register_script(RELEASE_LOCK)
        self._refresh = conn.register_script(REFRESH_LOCK)

    def acquire(self, me: LockHolder) -> None:
        """Take the lock or raise RunActive naming the holder."""
        if self.conn.set(LOCK_KEY, str(me), nx=True, ex=LOCK_TTL_S):
            return
        holder = self.holder()
        name = f"run {holder.run_id} (coordinator {holder.host}:{holder.pid})" if holder else "a run"
        raise RunActive(
            f"{name} is active; wait for it, stop it with `harness cancel`, or take over with "
            f"--force (a lock whose coordinator died expires within {LOCK_TTL_S}s)",
            holder,
        )

    def holder(self) -> LockHolder | None:
        value = self.conn.get(LOCK_KEY)
        if not value:
            return None
        return LockHolder.parse(value.decode() if isinstance(value, bytes) else str(value))

    def refresh(self, me: LockHolder) -> bool:
        """Extend our lock; False if it is no longer ours."""
        return bool(self._refresh(keys=[LOCK_KEY], args=[str(me), LOCK_TTL_S]))

    def release(self, holder: LockHolder) -> bool:
        """Free the lock if ``holder`` still has it (also used to break a dead one's)."""
        return bool(self._release(keys=[LOCK_KEY], args=[str(holder)]))
