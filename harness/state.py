"""Live run state in Redis: one hash that the coordinator, every worker and any status call
share.

Everything a status call needs is here as counters and timestamps, so reading it is one
HGETALL whatever the number of orders. Workers report each batch through one Lua script:
the processed counter and the processing window move together, and a worker still holding
a job from an older run changes nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from redis import Redis

STATE_KEY = "harness:run"
WORKER_RSS_KEY = "harness:worker-rss"
LOCK_KEY = "harness:lock"
# A coordinator refreshes its lock every few seconds; one that died frees it after this.
LOCK_TTL_S = 30


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

# KEYS: state hash, worker RSS hash.
# ARGV: runId, priority, orders moved, first start, last end, worker name, worker max RSS (KB).
RECORD_BATCH = """
if redis.call('HGET', KEYS[1], 'runId') ~= ARGV[1] then return -1 end
local p = ARGV[2]
local n = redis.call('HINCRBY', KEYS[1], 'processed:' .. p, ARGV[3])
local s = redis.call('HGET', KEYS[1], 'start:' .. p)
if (not s) or tonumber(ARGV[4]) < tonumber(s) then redis.call('HSET', KEYS[1], 'start:' .. p, ARGV[4]) end
local e = redis.call('HGET', KEYS[1], 'end:' .. p)
if (not e) or tonumber(ARGV[5]) > tonumber(e) then redis.call('HSET', KEYS[1], 'end:' .. p, ARGV[5]) end
redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
return n
"""

RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RunActive(RuntimeError):
    """Another run holds the lock; the message names it."""


class RunState:
    """The live state of the current (or last) run."""

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self._record_batch = conn.register_script(RECORD_BATCH)
        self._release = conn.register_script(RELEASE_LOCK)
        self._refresh = conn.register_script(REFRESH_LOCK)

    def acquire(self, run_id: str) -> None:
        """Take the one-run-at-a-time lock or raise RunActive naming the holder."""
        if self.conn.set(LOCK_KEY, run_id, nx=True, ex=LOCK_TTL_S):
            return
        holder = self.conn.get(LOCK_KEY)
        name = _text(holder) if holder else "another run"
        raise RunActive(
            f"run {name} is active; wait for it to finish (a run whose coordinator died "
            f"frees its lock within {LOCK_TTL_S}s)"
        )

    def refresh(self, run_id: str) -> bool:
        """Extend our lock; False if it is no longer ours."""
        return bool(self._refresh(keys=[LOCK_KEY], args=[run_id, LOCK_TTL_S]))

    def release(self, run_id: str) -> None:
        self._release(keys=[LOCK_KEY], args=[run_id])

    def begin(self, fields: dict[str, Any]) -> None:
        """Replace whatever the last run left with a fresh state."""
        pipe = self.conn.pipeline()
        pipe.delete(STATE_KEY, WORKER_RSS_KEY)
        pipe.hset(STATE_KEY, mapping={k: _encode(v) for k, v in fields.items()})
        pipe.execute()

    def set(self, **fields: Any) -> None:
        self.conn.hset(STATE_KEY, mapping={k: _encode(v) for k, v in fields.items()})

    def read(self) -> dict[str, str]:
        raw = self.conn.hgetall(STATE_KEY)
        return {_text(k): _text(v) for k, v in raw.items()}

    def get(self, *fields: str) -> list[str | None]:
        return [_text(v) if v is not None else None for v in self.conn.hmget(STATE_KEY, fields)]

    def processed(self, priority: str) -> int:
        value = self.conn.hget(STATE_KEY, f"processed:{priority}")
        return int(value) if value is not None else 0

    def record_batch(
        self, run_id: str, priority: str, moved: int, start: float, end: float,
        worker: str, rss_kb: int,
    ) -> int:
        """Count a worker's committed batch; -1 when the run is no longer ``run_id``."""
        return int(self._record_batch(
            keys=[STATE_KEY, WORKER_RSS_KEY],
            args=[run_id, priority, moved, repr(start), repr(end), worker, rss_kb],
        ))

    def worker_rss_kb(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.conn.hgetall(WORKER_RSS_KEY).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(value: Any) -> str | int | float:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return value
    return str(value)
