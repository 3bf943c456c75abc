"""RQ queues and batch jobs.

RQ costs a few milliseconds per job whatever the job carries, so a job carries a batch of
order seqs (``orders_per_job``; 1 reproduces the original's one job per order), packed
(:class:`Seqs`). Jobs are enqueued many at a time in one Redis pipeline.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Any, TypeVar

from redis import Redis
from rq import Queue, suspension
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, Retry
from rq.registry import (
    BaseRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from harness.errors import BadInput, ConfigError
from harness.lock import process_is_dead
from harness.orders import NORMAL, VIP
from harness.parsing import items

T = TypeVar("T")
QUEUE_NAMES = {VIP: "orders-vip", NORMAL: "orders-normal"}
# Workers listen VIP first. The barrier does not rely on this (NORMAL jobs are only
# enqueued once every VIP order is processed), but it keeps VIP first for any leftovers.
LISTEN_ORDER = [QUEUE_NAMES[VIP], QUEUE_NAMES[NORMAL]]
JOB_FUNC = "harness.worker.process_batch"
RESULT_TTL = 3_600
FAILURE_TTL = 7 * 24 * 3_600
PIPELINE_JOBS = 500
# Job states as operators of the original service name them (BullMQ's), mapped onto RQ.
STATES = ("waiting", "active", "completed", "failed", "deferred", "scheduled")
# BullMQ's names for what the HTTP API's users ask for (``state=wait``, ``types=delayed``):
# BullMQ's "delayed" is RQ's deferred (waiting on a dependency) plus scheduled (a retry due
# later); "paused" and "prioritized" jobs are waiting ones here.
ALIASES: dict[str, tuple[str, ...]] = {
    "wait": ("waiting",), "paused": ("waiting",), "prioritized": ("waiting",),
    "delayed": ("deferred", "scheduled"),
}
# A `harness queue close` request: the time it was made. Worker pools started before it stop.
CLOSE_KEY = "harness:close"
CLOSE_TTL_S = 3_600


class Seqs:
    """A batch's order seqs as its job carries them: the first seq, then each step to the
    next as one byte (what :func:`pack` makes of ascending seqs that lie close together).

    Why: RQ pickles a job's arguments and zlib-compresses them, and saves the job again
    when it finishes; 5,000 seqs above 65,535 pickle to 25 KB of poorly compressible ints.
    Measured in a 1M run (200 jobs of 5,000): zlib.compress took 0.48 s of the coordinator's
    CPU and as much again in the workers. Packed, a job's data is ~5 KB (1 KB compressed),
    packing 0.13 ms and unpacking 0.09 ms a job. A sized iterable: ``len``, iteration in
    order, equality with another ``Seqs``. Its class is pickled by name, so coordinator and
    workers must run the same harness (an older worker cannot unpickle such a job)."""

    __slots__ = ("first", "steps")

    def __init__(self, first: int, steps: bytes) -> None:
        self.first, self.steps = first, steps

    def __len__(self) -> int:
        return len(self.steps) + 1

    def __iter__(self) -> Iterator[int]:
        return accumulate(self.steps, initial=self.first)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Seqs) and (self.first, self.steps) == (other.first, other.steps)

    def __hash__(self) -> int:
        return hash((self.first, self.steps))

    def __reduce__(self) -> tuple[type[Seqs], tuple[int, bytes]]:
        return Seqs, (self.first, self.steps)

    def __repr__(self) -> str:
        return f"Seqs({len(self)} from {self.first})"


def pack(seqs: Sequence[int]) -> Seqs | list[int]:
    """``seqs`` as a job carries them: a :class:`Seqs` when two or more ascend in steps of 1 to
    255 (a run's batches: VIP orders are ~1 in 4, NORMAL ones 3 in 4), else a plain list
    (any other batch: a resumed run's pending seqs may lie far apart)."""
    if len(seqs) < 2:  # nothing to gain (one order per job: `-j 1`)
        return list(seqs)
    try:
        steps = bytes(map(operator.sub, seqs[1:], seqs[:-1]))
    except ValueError:  # a step outside 0..255
        return list(seqs)
    if 0 in steps:  # not strictly ascending
        return list(seqs)
    return Seqs(seqs[0], steps)


def queues(conn: Redis) -> dict[str, Queue]:
    return {p: Queue(name, connection=conn) for p, name in QUEUE_NAMES.items()}


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def job_timeout(orders_per_job: int, work_ms: float) -> int:
    """Generous: a batch that runs this long is stuck, not slow."""
    return int(300 + orders_per_job * (work_ms / 1000) * 3)


def enqueue_batches(
    queue: Queue, run_id: str, priority: str, seq_batches: Iterable[Sequence[int]], timeout: int,
    func: str = JOB_FUNC, epoch: int = 0, retry_intervals: Sequence[float] = (),
) -> int:
    """Enqueue one job per batch, up to PIPELINE_JOBS jobs per Redis pipeline.

    Bounded pipelines let workers start on the first jobs while later ones are still being
    sent (with one order per job, a 10,000-id page is 10,000 jobs). A job that fails, or
    whose worker dies, is tried again after each of ``retry_intervals`` in turn, then
    dead-lettered (RQ's failed registry).
    """
    # RQ types intervals as int but schedules with timedelta(seconds=...): floats work.
    retry = (Retry(max=len(retry_intervals), interval=list(retry_intervals))  # type: ignore[arg-type]
             if retry_intervals else None)
    datas = [
        Queue.prepare_data(
            func, args=(run_id, priority, pack(batch), epoch), timeout=timeout,
            result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL, retry=retry,
            description=f"{priority} batch of {len(batch)} ({run_id})",
        )
        for batch in seq_batches
    ]
    for part in batches(datas, PIPELINE_JOBS):
        with queue.connection.pipeline() as pipe:
            queue.enqueue_many(part, pipeline=pipe)
            pipe.execute()
    return len(datas)


def last_failure(conn: Redis) -> str | None:
    """The last line of the newest failed job's traceback, for an error message."""
    for q in queues(conn).values():
        for job in Job.fetch_many(FailedJobRegistry(queue=q).get_job_ids()[-1:], connection=conn):
            if job is not None:
                return last_error(job)
    return None


def last_error(job: Job) -> str:
    """The last line of a job's latest traceback (RQ's abandoned-job note, or the job's
    description when there is none), at most 300 characters."""
    result = job.latest_result()
    text = ((result.exc_string if result else None) or job._exc_info or "").strip()
    line = text.splitlines()[-1] if text else (job.description or job.id)
    return line if len(line) <= 300 else line[:300] + "…"


def empty(conn: Redis) -> None:
    """Drop every queued job of both queues (one Lua call per queue: fast at any size)."""
    for q in queues(conn).values():
        q.empty()


def purge(conn: Redis) -> None:
    """Empty both queues and their finished, failed and scheduled (retry) registries.

    Jobs already running are left to finish (RQ cannot take them back); see
    :func:`running_count`.
    """
    empty(conn)
    for q in queues(conn).values():
        for registry in (FailedJobRegistry(queue=q), FinishedJobRegistry(queue=q),
                         ScheduledJobRegistry(queue=q)):
            _drop_all(registry)


def _drop_all(registry: BaseRegistry) -> int:
    """Delete every job of a registry; return how many went.

    RQ's own ``registry.remove(delete_job=True)`` costs several round trips per job (1.2 s
    for the ~1,000 jobs of a 1M-order run); here a page of jobs is fetched in one round trip
    and deleted in one pipeline, RQ still doing its own bookkeeping. A job deleted meanwhile
    (a concurrent purge, RQ's cleanup) only loses its registry entry.
    """
    conn, removed = registry.connection, 0
    for part in batches(registry.get_job_ids(), PIPELINE_JOBS):
        with conn.pipeline() as pipe:
            for job_id, job in zip(part, Job.fetch_many(part, connection=conn), strict=True):
                if job is not None:
                    try:
                        job.delete(pipeline=pipe, remove_from_queue=False)
                        removed += 1
                        continue
                    except (NoSuchJobError, InvalidJobOperation):
                        pass
                registry.remove(job_id, pipeline=pipe)
            pipe.execute()
    return removed


def running_count(conn: Redis) -> int:
    """Jobs a worker has started and not finished (or whose worker died: RQ keeps those
    until their timeout passes)."""
    return sum(StartedJobRegistry(queue=q).count for q in queues(conn).values())


def wait_idle(conn: Redis, timeout: float, poll: float = 0.02) -> int:
    """Wait until no job runs, at most ``timeout`` seconds; return how many still run."""
    deadline = time.monotonic() + timeout
    while (running := running_count(conn)) and time.monotonic() < deadline:
        time.sleep(poll)
    return running


# -- queue controls (the original's /queue/* routes) ----------------------------------------

def pause(conn: Redis) -> None:
    """Workers take no new job until :func:`resume` (a running batch finishes)."""
    suspension.suspend(conn)


def resume(conn: Redis) -> None:
    suspension.resume(conn)


def is_paused(conn: Redis) -> bool:
    return bool(suspension.is_suspended(conn))


def _source(q: Queue, state: str) -> BaseRegistry | None:
    """The RQ registry holding jobs in ``state``; None for waiting (the queue itself)."""
    registries: dict[str, BaseRegistry] = {
        "active": q.started_job_registry, "completed": q.finished_job_registry,
        "failed": q.failed_job_registry, "deferred": q.deferred_job_registry,
        "scheduled": q.scheduled_job_registry,
    }
    if state == "waiting":
        return None
    if state not in registries:
        raise BadInput(f"unknown job state {state!r}; choose from {', '.join(STATES)}")
    return registries[state]


def resolve_states(names: Iterable[str]) -> list[str]:
    """Job states by harness or BullMQ name (``wait``, ``delayed``...), in order, each once;
    ConfigError names the first unknown one."""
    out: list[str] = []
    for name in names:
        known = (name,) if name in STATES else ALIASES.get(name)
        if known is None:
            raise ConfigError(f"unknown job state {name!r}; choose from "
                              f"{', '.join([*STATES, *ALIASES])}", "types")
        out.extend(s for s in known if s not in out)
    return out


def parse_states(text: str) -> list[str]:
    """Comma-separated job states (``waiting,active``), as `harness queue jobs -t` and
    ``GET /pedidos/queue/jobs?types`` take them: at least one, each known."""
    return resolve_states(items(text, "types"))


def status(conn: Redis) -> dict[str, Any]:
    """Whether the queues are paused, how many workers serve them, and their counts."""
    return {"paused": is_paused(conn), "workers": worker_count(conn), "counts": counts(conn)}


def counts(conn: Redis) -> dict[str, dict[str, int]]:
    """Jobs per state for each queue, plus ``total`` per state."""
    out: dict[str, dict[str, int]] = {}
    for q in queues(conn).values():
        out[q.name] = {
            state: q.count if (reg := _source(q, state)) is None else reg.count for state in STATES
        }
    out["total"] = {state: sum(c[state] for c in out.values()) for state in STATES}
    return out


def jobs(conn: Redis, states: Sequence[str], limit: int = 20) -> list[dict[str, Any]]:
    """Up to ``limit`` jobs per queue and state, newest registry entries last."""
    rows: list[dict[str, Any]] = []
    for q in queues(conn).values():
        for state in states:
            reg = _source(q, state)
            ids = q.get_job_ids(0, limit) if reg is None else reg.get_job_ids(0, limit - 1)
            for job in Job.fetch_many(ids, connection=conn):
                if job is None:
                    continue
                rows.append({
                    "queue": q.name, "state": state, "id": job.id, "description": job.description,
                    "enqueuedAt": _iso(job.enqueued_at), "startedAt": _iso(job.started_at),
                    "endedAt": _iso(job.ended_at), "worker": job.worker_name,
                })
    return rows


def clean(conn: Redis, state: str) -> int:
    """Delete every job in ``state`` from both queues; return how many went.

    Running jobs cannot be taken back from a worker: ``active`` is refused (cancel the run).
    """
    if state == "active":
        raise BadInput("running jobs cannot be removed; use `harness cancel` to stop a run")
    removed = 0
    for q in queues(conn).values():
        reg = _source(q, state)
        if reg is None:
            removed += q.count
            q.empty()
            continue
        removed += _drop_all(reg)
    return removed


def request_close(conn: Redis) -> float:
    """Ask every harness worker pool running now to stop its workers and exit (warm)."""
    now = time.time()
    conn.set(CLOSE_KEY, repr(now), ex=CLOSE_TTL_S)
    return now


def close_requested_since(conn: Redis, since: float) -> bool:
    value = conn.get(CLOSE_KEY)
    return value is not None and float(value) >= since


def worker_count(conn: Redis) -> int:
    """Workers registered on the harness queues, less those provably dead (on this host, no
    such process): RQ keeps a worker killed before it could unregister for minutes."""
    from rq.worker import Worker

    workers = {w.name: w for q in queues(conn).values() for w in Worker.all(queue=q)}
    return sum(not process_is_dead(w.hostname, w.pid) for w in workers.values())


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
