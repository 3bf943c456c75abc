"""RQ queues and batch jobs.

RQ costs a few milliseconds per job whatever the job carries, so a job carries a batch of
order seqs (``orders_per_job``; 1 reproduces the original's one job per order). Jobs are
enqueued many at a time in one Redis pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from harness.orders import NORMAL, VIP

T = TypeVar("T")
QUEUE_NAMES = {VIP: "orders-vip", NORMAL: "orders-normal"}
# Workers listen VIP first. The barrier does not rely on this (NORMAL jobs are only
# enqueued once every VIP order is processed), but it keeps VIP first for any leftovers.
LISTEN_ORDER = [QUEUE_NAMES[VIP], QUEUE_NAMES[NORMAL]]
JOB_FUNC = "harness.worker.process_batch"
RESULT_TTL = 3_600
FAILURE_TTL = 7 * 24 * 3_600
PIPELINE_JOBS = 500


def queues(conn: Redis) -> dict[str, Queue]:
    return {p: Queue(name, connection=conn) for p, name in QUEUE_NAMES.items()}


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def job_timeout(orders_per_job: int, work_ms: float) -> int:
    """Generous: a batch that runs this long is stuck, not slow."""
    return int(300 + orders_per_job * (work_ms / 1000) * 3)


def enqueue_batches(
    queue: Queue, run_id: str, priority: str, seq_batches: Iterable[Sequence[int]], timeout: int
) -> int:
    """Enqueue one job per batch, up to PIPELINE_JOBS jobs per Redis pipeline.

    Bounded pipelines let workers start on the first jobs while later ones are still being
    sent (with one order per job, a 10,000-id page is 10,000 jobs).
    """
    datas = [
        Queue.prepare_data(
            JOB_FUNC, args=(run_id, priority, list(batch)), timeout=timeout,
            result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
            description=f"{priority} batch of {len(batch)} ({run_id})",
        )
        for batch in seq_batches
    ]
    for part in batches(datas, PIPELINE_JOBS):
        with queue.connection.pipeline() as pipe:
            queue.enqueue_many(part, pipeline=pipe)
            pipe.execute()
    return len(datas)


def failed_count(conn: Redis) -> int:
    return sum(FailedJobRegistry(queue=q).count for q in queues(conn).values())


def last_failure(conn: Redis) -> str | None:
    """The last line of the newest failed job's traceback, for an error message."""
    for q in queues(conn).values():
        registry = FailedJobRegistry(queue=q)
        for job_id in registry.get_job_ids()[-1:]:
            job = q.fetch_job(job_id)
            if job is not None:
                result = job.latest_result()
                text = ((result.exc_string if result else None) or "").strip()
                line = text.splitlines()[-1] if text else (job.description or job.id)
                return line if len(line) <= 300 else line[:300] + "…"
    return None


def purge(conn: Redis) -> None:
    """Empty both queues and their finished and failed registries.

    Jobs already running are left to finish (RQ cannot take them back); see
    :func:`running_count`.
    """
    for q in queues(conn).values():
        q.empty()
        for registry in (FailedJobRegistry(queue=q), FinishedJobRegistry(queue=q)):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)


def running_count(conn: Redis) -> int:
    """Jobs a worker has started and not finished (or whose worker died: RQ keeps those
    until their timeout passes)."""
    return sum(StartedJobRegistry(queue=q).count for q in queues(conn).values())
