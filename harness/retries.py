"""Batches that failed or whose worker died: retried with backoff, then dead-lettered.

RQ does most of it. A job enqueued with ``Retry`` (see :func:`harness.queue.enqueue_batches`)
goes back to its queue after its interval when it raises, and to RQ's failed registry, our
dead-letter list, once its tries are spent. Two gaps are filled here, by the coordinator
while it waits:

- A worker killed outright (SIGKILL, the OOM killer) leaves its job "started" until the
  job's timeout, five minutes and more, before RQ calls it abandoned. A job whose worker is
  provably dead (this host, no such process) is expired at once instead, and RQ's own
  abandoned-job handling retries it or dead-letters it. Workers on other hosts are left to
  RQ's timeout: from here, a slow worker and a dead one look alike.
- A worker killed right after taking a job off its queues (RQ pops it with BLPOP, since
  our workers listen on two queues) and before registering it as started leaves it in no
  queue and no registry: nothing would ever run it. The coordinator notices when nothing
  is in flight but orders are still pending, and enqueues those orders again
  (:meth:`harness.supervision.Supervisor.look_after_batches`). Seen once in 11 dead-letter
  trials with repeated worker kills: the run ended ERROR, "12,398 VIP order(s) are
  unaccounted for".
- Harness workers run no RQ scheduler (see :class:`harness.worker.HarnessWorker`), so the
  retries that are due are moved back to their queue here, and on time: RQ keeps a retry's
  due time in whole seconds, rounded down, which would start a 0.6 s backoff at once. Here
  a retry is due when its backoff has passed since its try ended.

Running a batch again is safe because an order only ever moves from pendente to processado
and a job's orders are counted once per job, whatever try counts them
(:func:`harness.worker.process_batch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import as_text, now, parse_composite_key, utcformat
from rq.worker import Worker

from harness.lock import process_is_dead
from harness.queue import last_error, queues

log = logging.getLogger("harness")
def reap_abandoned(conn: Redis) -> list[str]:
    """Hand RQ the started jobs whose worker is provably dead; return their ids."""
    reaped: list[str] = []
    for q in queues(conn).values():
        registry = StartedJobRegistry(queue=q)
        entries = [as_text(e) for e in conn.zrange(registry.key, 0, -1)]  # type: ignore[arg-type]
        if not entries:
            continue
        job_ids = [parse_composite_key(e)[0] for e in entries]
        dead = []
        for entry, job in zip(entries, Job.fetch_many(job_ids, connection=conn), strict=True):
            if job is None or not job.worker_name:
                continue
            host, pid = conn.hmget(Worker.redis_worker_namespace_prefix + job.worker_name,
                                   ["hostname", "pid"])
            if host is not None and process_is_dead(as_text(host), int(pid or 0)):
                dead.append((entry, job))
        if dead:
            # Ended now (the backoff counts from here) and expired: RQ's cleanup retries each
            # one with tries left, else dead-letters it.
            with conn.pipeline() as pipe:
                for entry, job in dead:
                    pipe.hset(job.key, "ended_at", utcformat(now()))
                    pipe.zadd(registry.key, {entry: 0}, xx=True)
                pipe.execute()
            registry.cleanup()
            for _, job in dead:
                log.warning("batch %s (%s) lost its worker %s; retrying it (%s tries left)",
                            job.id, job.description, job.worker_name, job.retries_left or 0)
                reaped.append(job.id)
    return reaped


def enqueue_due(conn: Redis) -> int:
    """Move retries whose backoff has passed back to their queue; return how many."""
    moved, at = 0, time.time()
    for q in queues(conn).values():
        registry = ScheduledJobRegistry(queue=q)
        ids = registry.get_jobs_to_schedule(int(at) + 1)  # RQ's whole seconds, rounded down
        for job in Job.fetch_many(ids, connection=conn):
            if job is not None and due_at(job) <= at:
                moved += _requeue(registry, job)
    return moved


def due_at(job: Job) -> float:
    """When a scheduled retry is due: its try's end plus the backoff RQ picked for it (0 when
    that cannot be known; RQ's own due time then stands)."""
    intervals = job.retry_intervals or []
    if job.ended_at is None or not intervals:
        return 0.0
    # RQ takes interval [len - retries left] before counting the retry down.
    index = min(max(len(intervals) - (job.retries_left or 0) - 1, 0), len(intervals) - 1)
    ended = job.ended_at if job.ended_at.tzinfo else job.ended_at.replace(tzinfo=UTC)
    return datetime.timestamp(ended) + intervals[index]


def in_flight(conn: Redis) -> int:
    """Jobs that may still complete: queued, running, or waiting for a retry."""
    return sum(
        q.count + StartedJobRegistry(queue=q).count + ScheduledJobRegistry(queue=q).count
        for q in queues(conn).values()
    )


def dead_letters(conn: Redis, limit: int | None = None) -> list[dict[str, Any]]:
    """The dead-lettered batches, oldest first: what `harness status` and `health` list."""
    rows: list[dict[str, Any]] = []
    for name, q in queues(conn).items():
        registry = FailedJobRegistry(queue=q)
        ids = registry.get_job_ids(0, -1 if limit is None else limit - 1)
        for job in Job.fetch_many(ids, connection=conn):
            if job is None:
                continue
            args = job.args or ()
            rows.append({
                "id": job.id, "priority": name, "runId": args[0] if args else None,
                "orders": len(args[2]) if len(args) > 2 else None,
                "endedAt": job.ended_at.isoformat() if job.ended_at else None,
                "error": last_error(job),
            })
    return rows


def dead_letter_count(conn: Redis) -> int:
    return sum(FailedJobRegistry(queue=q).count for q in queues(conn).values())


def retry_failed(conn: Redis, retry_intervals: Sequence[float]) -> int:
    """Requeue every dead-lettered batch with a fresh set of tries; return how many."""
    requeued = 0
    for q in queues(conn).values():
        registry = FailedJobRegistry(queue=q)
        for job in Job.fetch_many(registry.get_job_ids(), connection=conn):
            if job is None:
                continue
            job.retries_left = len(retry_intervals) or None
            job.retry_intervals = list(retry_intervals)  # type: ignore[arg-type]  # see enqueue_batches
            requeued += _requeue(registry, job)
    return requeued


def _requeue(registry: ScheduledJobRegistry | FailedJobRegistry, job: Job) -> bool:
    """Put ``job`` back on its queue; False if another process moved or deleted it first."""
    try:
        registry.requeue(job)
    except (InvalidJobOperation, NoSuchJobError):
        return False
    return True
