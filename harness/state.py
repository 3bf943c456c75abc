"""Live run state in Redis: one hash that the coordinator, every worker and any status call
share.

Everything a status call needs is here as counters and timestamps, so reading it is one
HGETALL whatever the number of orders. Workers report each batch through one Lua script:
the processed counter and the processing window move together, and a worker still holding
a job from an older run changes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from harness.codec import from_json, to_json

# Re-exported: their home is harness.datatypes, the leaf module.
from harness.datatypes import ACTIVE_PHASES as ACTIVE_PHASES
from harness.datatypes import Phase as Phase

STATE_KEY = "harness:run"
# Per job id: how many tries it has had (raised as each try starts), and how many of its
# orders are counted in the state's processed counters. A retried batch counts only what
# its earlier tries left uncounted, so no order is counted twice whatever died where.
ATTEMPTS_KEY = "harness:attempts"
COUNTED_KEY = "harness:counted"
# Per worker ("host:pid"): how many batches it finished for the run. The workers that
# joined a run, wherever they run, as `harness status` and GET /pedidos list them.
WORKERS_KEY = "harness:workers"
RUN_KEYS = (STATE_KEY, ATTEMPTS_KEY, COUNTED_KEY, WORKERS_KEY)
# A cancel request: JSON naming the run and the cancel's options. Workers and the
# coordinator read it; it outlives the run so that a job popped late still sees it.
ABORT_KEY = "harness:abort"
ABORT_TTL_S = 24 * 3_600


# KEYS: state hash, counted hash, workers hash.
# ARGV: runId, epoch, priority, job id, orders of the job now processed in the store
# (cumulative over its tries), first start, last end ('' when this call moved nothing),
# the worker to credit with a finished batch ('' for none).
# (Workers' memory is sampled by the coordinator: harness.sampling.)
# Returns how many orders it added to the counter, or -1 when the run (or its epoch: a
# resume starts a new one) is no longer the job's.
RECORD_BATCH = """
local run = redis.call('HMGET', KEYS[1], 'runId', 'epoch')
if run[1] ~= ARGV[1] or (run[2] or '0') ~= ARGV[2] then return -1 end
local p = ARGV[3]
local delta = tonumber(ARGV[5]) - tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
if delta > 0 then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'processed:' .. p, delta)
end
if ARGV[6] ~= '' then
  local s = redis.call('HGET', KEYS[1], 'start:' .. p)
  if (not s) or tonumber(ARGV[6]) < tonumber(s) then redis.call('HSET', KEYS[1], 'start:' .. p, ARGV[6]) end
  local e = redis.call('HGET', KEYS[1], 'end:' .. p)
  if (not e) or tonumber(ARGV[7]) > tonumber(e) then redis.call('HSET', KEYS[1], 'end:' .. p, ARGV[7]) end
end
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[8], 1) end
return math.max(delta, 0)
"""

@dataclass(frozen=True)
class CancelRequest:
    """What `harness cancel` (or a takeover) asked of a run, with the original's switches."""

    run_id: str
    purge: bool = True
    remove_pending: bool = True
    reset_metrics: bool = False
    requested_at: float = field(default_factory=time.time)

    def dumps(self) -> str:
        return json.dumps(to_json(self))

    @classmethod
    def loads(cls, value: bytes | str) -> CancelRequest:
        return from_json(cls, json.loads(value))


@dataclass(frozen=True)
class JobContext:
    """What a batch job learns from Redis before it starts and between its groups."""

    current: bool  # the job's run and epoch are the live ones
    work_ms: float
    cancelled: bool
    attempt: int  # which try of this job this is (1 = first); 0 when not counted


class RunState:
    """The live state of the current (or last) run."""

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self._record_batch = conn.register_script(RECORD_BATCH)

    def request_abort(self, request: CancelRequest) -> CancelRequest:
        """Leave a cancel request for its run; return the one in effect. The first request
        for a run wins: a second cancel of the same run (say with other options) changes
        nothing and learns what the first asked for."""
        for _ in range(5):
            if self.conn.set(ABORT_KEY, request.dumps(), nx=True, ex=ABORT_TTL_S):
                return request
            existing = self.abort_request(request.run_id)
            if existing is not None:
                return existing
            self.conn.delete(ABORT_KEY)  # a request left by an older run
        raise RuntimeError("could not leave a cancel request")  # five races in a row

    def abort_request(self, run_id: str) -> CancelRequest | None:
        """The cancel request for ``run_id``, if one was made."""
        return _for_run(self.conn.get(ABORT_KEY), run_id)

    def job_context(self, run_id: str, epoch: int, job_id: str | None = None) -> JobContext:
        """What a worker checks before and during a batch, in one round trip. With
        ``job_id`` (at the start of a try) it also counts the try."""
        pipe = self.conn.pipeline(transaction=False)
        pipe.hmget(STATE_KEY, ["runId", "epoch", "workMs"])
        pipe.get(ABORT_KEY)
        if job_id is not None:
            pipe.hincrby(ATTEMPTS_KEY, job_id, 1)
        (current, current_epoch, work_ms), abort, *attempt = pipe.execute()
        return JobContext(
            current=(_text(current) == run_id and int(current_epoch or 0) == epoch) if current else False,
            work_ms=float(work_ms or 0),
            cancelled=_for_run(abort, run_id) is not None,
            attempt=int(attempt[0]) if attempt else 0,
        )

    def check(self, run_id: str, epoch: int) -> tuple[bool, CancelRequest | None]:
        """The coordinator's per-tick check, one round trip: is the live state still this
        run's (a Redis restart or flush loses it), and has a cancel been asked for?"""
        pipe = self.conn.pipeline(transaction=False)
        pipe.hmget(STATE_KEY, ["runId", "epoch"])
        pipe.get(ABORT_KEY)
        (current, current_epoch), abort = pipe.execute()
        ours = current is not None and _text(current) == run_id and int(current_epoch or 0) == epoch
        return ours, _for_run(abort, run_id)

    def clear_abort(self, run_id: str) -> None:
        """Drop a cancel request naming ``run_id`` (a resumed run starts without one)."""
        if self.abort_request(run_id) is not None:
            self.conn.delete(ABORT_KEY)

    def begin(self, fields: dict[str, Any]) -> None:
        """Replace whatever the last run left with a fresh state."""
        pipe = self.conn.pipeline()
        pipe.delete(*RUN_KEYS)  # not ABORT_KEY: it may already name this run
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
        self, run_id: str, epoch: int, priority: str, job_id: str, done_in_job: int,
        window: tuple[float, float] | None, finished_by: str | None = None,
    ) -> int:
        """Count a job's committed orders: ``done_in_job`` is how many of its orders the
        store holds as processed by this job. ``finished_by``: the worker ("host:pid")
        whose try of the job ended with this report. Returns how many were new to the
        counter, -1 when the run is no longer the job's."""
        start, end = (repr(window[0]), repr(window[1])) if window else ("", "")
        return int(self._record_batch(
            keys=[STATE_KEY, COUNTED_KEY, WORKERS_KEY],
            args=[run_id, epoch, priority, job_id, done_in_job, start, end, finished_by or ""],
        ))

    def workers(self) -> list[dict[str, Any]]:
        """The workers that finished batches of the run: host, pid and batches, most first."""
        return workers_of(self.conn.hgetall(WORKERS_KEY))

    def clear(self) -> None:
        """Forget the live state (metrics, counters, cancel request): status shows IDLE."""
        self.conn.delete(*RUN_KEYS, ABORT_KEY)


def workers_of(raw: dict[Any, Any]) -> list[dict[str, Any]]:
    """The workers hash (``host:pid`` -> batches) as rows, most batches first."""
    rows = []
    for name, batches in raw.items():
        host, _, pid = _text(name).rpartition(":")
        rows.append({"host": host, "pid": int(pid) if pid.isdigit() else None,
                     "batches": int(batches)})
    return sorted(rows, key=lambda r: (-r["batches"], r["host"], r["pid"] or 0))


def _for_run(value: bytes | str | None, run_id: str) -> CancelRequest | None:
    request = CancelRequest.loads(value) if value else None
    return request if request is not None and request.run_id == run_id else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(value: Any) -> str | int | float:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | str):
        return value
    return str(value)
