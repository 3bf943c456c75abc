"""The coordinator: one run through the original service's phases, timed.

IDLE → GENERATING → WAITING_VIP_DRAIN → ENQUEUE_NORMAL → WAITING_NORMAL_DRAIN → DONE
(or ERROR / ABORTED).

A run that stopped before DONE (its coordinator killed, Redis restarted, the store gone for
a while) can be resumed: the store is the truth. A resumed run regenerates only the chunks
the store lacks (the seeded generator makes them again, byte for byte), enqueues every
order still pending, VIP first, and goes through the same phases under a new *epoch*, so a
job left from before the resume changes nothing.

The VIP-first barrier is held by construction: NORMAL jobs do not exist until the
``processed:VIP`` counter, which workers raise only after their batch is committed to the
store, reaches the number of VIP orders generated. So no NORMAL order can start while any
VIP order is unprocessed, whatever the worker count. The run record then proves it again
from the stored timestamps.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import resource
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import RedisError

from harness import control, logs, retries
from harness import queue as rq_queue
from harness.config import TIERS, Settings, redact
from harness.connection import connect_redis
from harness.errors import CannotResume, RunFailed
from harness.logs import event
from harness.orders import NORMAL, PENDING, PROCESSED, VIP, generate, id_prefix
from harness.runs import barrier_proof, environment, iso, window_of
from harness.state import LockHolder, Phase, RunActive, RunState
from harness.store import Store, StoreError, open_store
from harness.worker import run_pool_for

log = logging.getLogger("harness")
T = TypeVar("T")
POLL_S = 0.02
LOCK_REFRESH_S = 5.0
POOL_STOP_TIMEOUT_S = 30.0
IDLE_WAIT_S = 10.0
# The record is saved this often while a run goes: what a resume starts from, and a write
# that finds an unusable store within the store timeout.
CHECKPOINT_S = 0.5
# How often, while waiting on a drain, abandoned batches are looked for and due retries moved.
RETRY_CHECK_S = 0.2
# Settings that shape a run's orders and work; a resumed run takes them from its record.
RUN_SHAPE = ("max_orders", "quantity", "chunk_size", "normal_batch_size", "orders_per_job",
             "concurrency", "seed", "tier_mix", "work_ms", "sweep_id")
TIMING_KEYS = ("generationTimeMs", "enqueueVipTimeMs", "enqueueNormalTimeMs", "waitVipDrainMs",
               "waitNormalDrainMs", "setupMs")
REDIS_LOST = ("Redis lost this run's live state (restarted or flushed?); every order is safe "
              "in the store: `harness resume` finishes the run")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; it was recorded as ABORTED."""


class Cancelled(Exception):
    """`harness cancel` asked this run to stop; carries the cancel's request."""

    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__(request["runId"])
        self.request = request


@dataclass(frozen=True)
class Progress:
    """What a progress bar needs, sent by the coordinator as the run moves."""

    phase: Phase
    target: int
    generated: int
    processed: int


ProgressCallback = Callable[[Progress], None]


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Pipeline:
    """One run. Build it, then call :meth:`run`; the returned record is also stored."""

    def __init__(
        self, settings: Settings, progress: ProgressCallback | None = None,
        start_workers: bool = True, force: bool = False, resume: str | bool = False,
        concurrency: int | None = None, run_id: str | None = None,
    ) -> None:
        """``resume``: True for the latest run, or a run id; that run's record then gives
        the run id, seed and shape, ``settings`` where to connect, and ``concurrency``, if
        given, a new worker count."""
        self.settings = settings
        self.progress = progress
        self.start_workers = start_workers
        self.force = force
        self.resume = resume
        self.concurrency = concurrency
        self.run_id = run_id or new_run_id()
        self.me = LockHolder.mine(self.run_id)
        self.epoch = 0
        self.phase = Phase.GENERATING
        self.seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        self.vip_total = self.normal_total = self.generated = 0
        self.jobs = {VIP: 0, NORMAL: 0}
        self.timings: dict[str, float] = {}
        self._pool: multiprocessing.process.BaseProcess | None = None
        self._last_refresh = self._last_log = self._last_checkpoint = self._last_retry_check = 0.0
        self._stopping = False
        self._store_down = self._redis_down = False
        self.conn: Redis
        self.store: Store
        # Set again when setup ends; here so that a run stopped during setup still records.
        self.started, self.t0 = time.time(), time.perf_counter()
        self.record: dict[str, Any] = {
            "runId": self.run_id,
            "phase": Phase.GENERATING.value,
            "parameters": {**settings.public_dict(), "seed": self.seed},
        }

    # -- the run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every phase; return the ``process_runs`` record (phase DONE, ERROR or ABORTED).

        Raises before writing anything if Redis or the store cannot be reached, or if
        another run is active (with ``force``, that run is cancelled first). A run whose
        coordinator provably died is taken over without ``force``.
        """
        logs.configure(self.settings)
        self.conn = connect_redis(self.settings)
        self.state = RunState(self.conn)
        store = open_store(self.settings)  # unreachable store: fail before any write
        try:
            store.ping()  # reachable but unusable (locked by another process) too
            if self.resume:
                self._load(store)
        finally:
            store.close()
        control.take_lock(self.settings, self.conn, self.me, self.force,
                          resume_of=self.run_id if self.resume else None)
        if self.resume:
            self.state.clear_abort(self.run_id)  # a cancel or takeover of the stopped run
        log.info(event("resume" if self.resume else "run", run=self.run_id,
                       epoch=self.epoch or None, backend=self.settings.backend,
                       quantity=self.settings.quantity, chunk=self.settings.chunk_size,
                       perJob=self.settings.orders_per_job,
                       concurrency=self.settings.concurrency, seed=self.seed,
                       redis=redact(self.settings.redis_address),
                       mongo=redact(self.settings.mongo_uri or "") or None))
        previous = self._catch_signals()
        try:
            return self._run_locked()
        finally:
            self._stopping = True
            try:
                self.state.release(self.me)
            except RedisError as exc:  # Redis down: the lock goes with it, or expires
                log.warning("could not release the run lock: %s", redact(str(exc)))
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _load(self, store: Store) -> None:
        """Take the run to resume from the store: its id, seed, shape and figures so far.

        Refused, before anything is written, when the store no longer holds that run's
        orders as they were: a newer run replaced them, or a cancel deleted its pending ones.
        """
        latest = next(iter(store.list_runs(1)), None)
        record = store.get_run(self.resume) if isinstance(self.resume, str) else latest
        if record is None or latest is None:
            raise CannotResume(f"no run {self.resume} is recorded" if isinstance(self.resume, str)
                               else "no run is recorded; nothing to resume")
        run_id = record["runId"]
        if run_id != latest["runId"]:
            raise CannotResume(f"run {run_id} cannot be resumed: the store now holds the orders "
                               f"of a later run, {latest['runId']}")
        if record.get("phase") == Phase.DONE:
            raise CannotResume(f"run {run_id} is DONE; nothing to resume")
        if (record.get("cancel") or {}).get("removedPending"):
            raise CannotResume(f"run {run_id} was cancelled and its pending orders deleted; "
                               "start a new run (a cancel with --keep-pending can be resumed)")
        params = record.get("parameters") or {}
        shape = {k: params[k] for k in RUN_SHAPE if params.get(k) is not None}
        self.settings = self.settings.replace(**shape).replace(concurrency=self.concurrency)
        self.seed = int(params["seed"])
        tally = store.tally()
        if tally.count() != tally.max_seq + 1:
            raise CannotResume(f"run {run_id} cannot be resumed: {tally.max_seq + 1 - tally.count():,} "
                               "of its orders were deleted from the store")
        first = store.get_orders([0])
        if first and int(first[0]["id"].replace("-", "")[:12], 16) != id_prefix(self.seed):
            raise CannotResume(f"the orders in the store are not run {run_id}'s")
        self.run_id, self.me = run_id, LockHolder.mine(run_id)
        self.record = {**record, "parameters": {**self.settings.public_dict(), "seed": self.seed}}
        self.epoch = len(record.get("resumes") or []) + 1
        self.started = datetime.fromisoformat(record["startedAt"]).timestamp()
        self.t0 = time.perf_counter() - (time.time() - self.started)
        self.timings = {k: float(v) for k, v in {  # this run adds its times to these
            **{k: record.get(k) for k in TIMING_KEYS}, **(record.get("breakdown") or {}),
        }.items() if v is not None}
        jobs = (record.get("counts") or {}).get("jobs") or {}
        self.jobs = {VIP: int(jobs.get("vip") or 0), NORMAL: int(jobs.get("normal") or 0)}

    def _catch_signals(self) -> dict[int, Any]:
        """Turn SIGINT and SIGTERM (Ctrl-C, `docker stop`) into an orderly ABORTED run.

        The first signal interrupts the run; one that arrives while it is already stopping
        (recording the run, stopping workers, releasing the lock) waits for that to finish.
        """
        if threading.current_thread() is not threading.main_thread():
            return {}

        def interrupt(signum: int, frame: Any) -> None:
            if self._stopping:
                log.warning("%s received while stopping; finishing cleanly",
                            signal.Signals(signum).name)
                return
            self._stopping = True
            raise Interrupted(signal.Signals(signum).name)

        return {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}

    def _run_locked(self) -> dict[str, Any]:
        setup_start = time.perf_counter()
        rq_queue.purge(self.conn)
        if self.resume:
            # A new epoch before waiting: a job of the stopped run that has not yet checked
            # in will find it and do nothing; one already running is waited for.
            self.state.begin(self._state_fields(Phase.GENERATING))
        self._wait_for_running_jobs()
        if self.start_workers:
            # Forked before this process opens its store, so no connection crosses a fork.
            self._pool = multiprocessing.get_context("fork").Process(
                target=run_pool_for, args=(os.getpid(), self.settings), name="harness-workers"
            )
            self._pool.start()
        try:
            self.store = open_store(self.settings)
            try:
                self._phases(setup_start)
            finally:
                self.store.close()
        finally:
            self._stopping = True
            self._stop_pool()
        return self.record

    def _wait_for_running_jobs(self) -> None:
        """A job of an earlier run still running would update this run's orders (they reuse
        its seqs) behind the counters' back: wait for it, briefly, before clearing orders."""
        if running := rq_queue.wait_idle(self.conn, IDLE_WAIT_S, POLL_S):
            raise RunActive(
                f"{running} job(s) of an earlier run are still running after "
                f"{IDLE_WAIT_S:.0f}s; stop their workers, or wait for RQ to expire them"
            )

    def _state_fields(self, phase: str) -> dict[str, Any]:
        return {
            "runId": self.run_id, "epoch": self.epoch, "phase": phase,
            "target": self.settings.quantity, "generated": self.generated,
            "startedAt": self.started, "workMs": self.settings.work_ms,
            "processed:VIP": 0, "processed:NORMAL": 0, "progressAt": time.time(),
        }

    def _begin(self, setup_start: float) -> None:
        """Take over the live state, clear the last run's orders, then start the clock."""
        self.state.begin(self._state_fields(Phase.GENERATING))
        self.store.clear_orders()  # the orders collection holds the current run only
        # The clock starts here: clearing the last run and starting workers is setup,
        # reported apart as setupMs, not part of the pipeline's end-to-end time.
        self.started = time.time()
        self.t0 = time.perf_counter()
        self.timings["setupMs"] = _ms(self.t0 - setup_start)
        self.state.set(startedAt=self.started, progressAt=self.started)
        self.record["startedAt"] = iso(self.started)
        self.record["environment"] = environment(self.settings, self.conn, self.store)
        self.store.save_run(self.record)

    def _restore(self, setup_start: float) -> None:
        """Resume: learn from the store where the run stopped and set the live state to it.

        Chunks are inserted in order and, on SQLite, each in one transaction; an unordered
        MongoDB insert cut short can leave the last chunk half there, so a partial chunk is
        dropped and made again. Only the tail can be partial, and none of it was enqueued.
        """
        s = self.settings
        tally = self.store.tally()
        stored, truncated = tally.count(), 0
        if stored < s.quantity and stored % s.chunk_size:
            truncated = self.store.truncate_from(stored // s.chunk_size * s.chunk_size)
            tally = self.store.tally()
        self.generated = tally.count()
        self.vip_total, self.normal_total = tally.count(VIP), tally.count(NORMAL)
        done = {p: tally.count(p, PROCESSED) for p in (VIP, NORMAL)}
        windows = self.store.windows()
        fields: dict[str, Any] = {
            "generated": self.generated, "vipTotal": self.vip_total,
            "normalTotal": self.normal_total, "processed:VIP": done[VIP],
            "processed:NORMAL": done[NORMAL], **self._timing_fields(),
        }
        for p, w in windows.items():
            if w.first_started is not None:
                fields.update({f"start:{p}": w.first_started, f"end:{p}": w.last_processed})
        self.state.set(**fields)
        self._add_time("setupMs", time.perf_counter() - setup_start, dict(self.timings))
        resumed = {
            "at": iso(time.time()), "epoch": self.epoch,
            "fromPhase": self.record.get("stoppedInPhase") or self.record.get("phase"),
            "fromError": self.record.get("error"), "lastCheckpointAt": self.record.get("checkpointAt"),
            "stored": self.generated, "truncated": truncated, "processed": done[VIP] + done[NORMAL],
            "pending": {"vip": tally.count(VIP, PENDING), "normal": tally.count(NORMAL, PENDING)},
        }
        self.record["resumes"] = [*(self.record.get("resumes") or []), resumed]
        self.record.update(phase=Phase.GENERATING.value, error=None,
                           environment=environment(self.settings, self.conn, self.store))
        self.record.pop("cancel", None)
        self.record.pop("stoppedInPhase", None)
        log.warning(event("resumed", run=self.run_id, epoch=self.epoch, **{
            k: v for k, v in resumed.items() if k in ("fromPhase", "stored", "truncated", "processed")}))
        self.store.save_run(self.record)

    def _phases(self, setup_start: float) -> None:
        """Every phase in order; whatever stops them is recorded before this returns."""
        try:
            if self.resume:
                self._restore(setup_start)
            else:
                self._begin(setup_start)
            self._enter(Phase.GENERATING)
            self._tick(Phase.GENERATING, report=False)  # a cancel that came during setup
            if self.resume:  # VIP orders stored before the stop, whatever became of their jobs
                self._enqueue_pending(VIP, Phase.GENERATING)
            self._generate()
            self._wait_drain(VIP, self.vip_total, Phase.WAITING_VIP_DRAIN)
            self._enter(Phase.ENQUEUE_NORMAL)
            self._enqueue_pending(NORMAL, Phase.ENQUEUE_NORMAL)
            self._wait_drain(NORMAL, self.normal_total, Phase.WAITING_NORMAL_DRAIN)
            self._finish(Phase.DONE)
        except KeyboardInterrupt as exc:
            self._stopping = True
            try:
                rq_queue.purge(self.conn)
            finally:
                self._finish(Phase.ABORTED, f"interrupted ({exc or 'SIGINT'})")
            raise
        except Cancelled as exc:
            self._cancel(exc.request)
        except RunFailed as exc:
            self._finish(Phase.ERROR, redact(str(exc)))
        except StoreError as exc:
            self._store_down = True  # every further call would wait out the timeout again
            log.error("run %s: %s", self.run_id, exc)
            self._finish(Phase.ERROR, f"store unavailable: {redact(str(exc))}; the orders it "
                         "holds are kept: `harness resume` finishes the run once it is back")
        except RedisError as exc:
            self._redis_down = True
            log.error("run %s: Redis failed: %s", self.run_id, redact(str(exc)))
            self._finish(Phase.ERROR, f"Redis failed ({type(exc).__name__}: {redact(str(exc))}); "
                         "every order is safe in the store: `harness resume` finishes the run "
                         "once Redis answers")
        except Exception as exc:
            log.exception("run %s failed", self.run_id)
            self._finish(Phase.ERROR, redact(f"{type(exc).__name__}: {exc}"))

    def _generate(self) -> None:
        """Generate and store chunk by chunk, enqueueing full VIP batches as they appear.

        A resumed run starts at the first chunk the store lacks.
        """
        s = self.settings
        weights = [s.tier_weights[t] for t in TIERS]
        vip_q = rq_queue.queues(self.conn)[VIP]
        timeout = rq_queue.job_timeout(s.orders_per_job, s.work_ms)
        gen_s = insert_s = enqueue_s = 0.0
        vip_buffer: list[int] = []
        base = dict(self.timings)  # times from before a resume, and this run's VIP backlog
        start = time.perf_counter()
        chunks = generate(self.seed, s.quantity, s.chunk_size, weights, first=self.generated)
        while True:
            t = time.perf_counter()
            chunk = next(chunks, None)
            gen_s += time.perf_counter() - t
            if chunk is None:
                break
            t = time.perf_counter()
            self.store.insert_orders(chunk)
            insert_s += time.perf_counter() - t
            self.generated += len(chunk)
            vip_buffer.extend(o.seq for o in chunk if o.priority == VIP)
            last = self.generated == s.quantity
            full = len(vip_buffer) if last else len(vip_buffer) // s.orders_per_job * s.orders_per_job
            t = time.perf_counter()
            self.jobs[VIP] += self._enqueue(VIP, vip_q, vip_buffer[:full], timeout)
            enqueue_s += time.perf_counter() - t
            self.vip_total += full
            del vip_buffer[:full]
            self.normal_total = self.generated - self.vip_total - len(vip_buffer)
            self._add_time("generationTimeMs", time.perf_counter() - start - enqueue_s, base)
            self._add_time("enqueueVipTimeMs", enqueue_s, base)
            self.state.set(
                generated=self.generated, vipTotal=self.vip_total, normalTotal=self.normal_total,
                progressAt=time.time(), **self._timing_fields(),
            )
            self._tick(Phase.GENERATING)
        self._add_time("generateMs", gen_s, base)
        self._add_time("insertMs", insert_s, base)

    def _enqueue(self, priority: str, queue: Any, seqs: list[int], timeout: int) -> int:
        return rq_queue.enqueue_batches(
            queue, self.run_id, priority, rq_queue.batches(seqs, self.settings.orders_per_job),
            timeout, epoch=self.epoch, retry_intervals=self.settings.retry_intervals,
        )

    def _add_time(self, key: str, seconds: float, base: dict[str, float]) -> None:
        """``key`` = its time before this stretch began (``base``: a resumed run's earlier
        times) + this stretch's ``seconds``; set as the stretch goes, for status."""
        self.timings[key] = round(base.get(key, 0.0) + _ms(seconds), 3)

    def _timing_fields(self) -> dict[str, float]:
        return {k: v for k, v in self.timings.items() if k in TIMING_KEYS}

    def _wait_drain(self, priority: str, total: int, phase: Phase) -> None:
        """Block until ``total`` orders of ``priority`` are processed, looking after batches
        that fail or lose their worker meanwhile."""
        self._enter(phase)
        base = dict(self.timings)
        start = time.perf_counter()
        stalled_since: float | None = None
        while self.state.processed(priority) < total:
            if self._pool is not None and not self._pool.is_alive():
                raise RunFailed("the worker pool exited before the queue drained")
            if time.monotonic() - self._last_retry_check >= RETRY_CHECK_S:
                self._last_retry_check = time.monotonic()
                stalled_since = self._look_after_batches(priority, total, stalled_since)
            self._tick(phase)
            time.sleep(POLL_S)
        self._add_time("waitVipDrainMs" if priority == VIP else "waitNormalDrainMs",
                       time.perf_counter() - start, base)

    def _look_after_batches(self, priority: str, total: int, stalled_since: float | None) -> float | None:
        """Retry batches whose worker died and those whose backoff is over; end the run when
        nothing can move any more (only dead letters, or nothing at all, left) for
        ``stuck_after_s``, which is how long `harness retry-failed` has to step in."""
        retries.reap_abandoned(self.conn)
        retries.enqueue_due(self.conn)
        if retries.in_flight(self.conn):
            return None
        now = time.monotonic()
        dead = retries.dead_letter_count(self.conn)
        if stalled_since is None:
            if dead:
                log.warning(event(
                    "dead-letters", run=self.run_id, batches=dead,
                    error=rq_queue.last_failure(self.conn),
                    action=f"`harness retry-failed` requeues them; the run fails in "
                           f"{self.settings.stuck_after_s:g}s otherwise"))
            return now
        if now - stalled_since < self.settings.stuck_after_s:
            return stalled_since
        missing = total - self.state.processed(priority)
        if dead:
            raise RunFailed(
                f"{dead} batch(es) failed {self.settings.job_retries + 1} time(s) and were "
                f"dead-lettered (last error: {rq_queue.last_failure(self.conn)}); {missing:,} "
                f"{priority} order(s) stay pendente: fix the cause, then `harness resume`")
        raise RunFailed(f"{missing:,} {priority} order(s) are unaccounted for: no batch is queued, "
                        "running or dead-lettered; `harness resume` enqueues pending orders again")

    def _enqueue_pending(self, priority: str, phase: Phase) -> None:
        """Page pending seqs of ``priority`` out of the store and enqueue them, page by page."""
        s = self.settings
        queue = rq_queue.queues(self.conn)[priority]
        timeout = rq_queue.job_timeout(s.orders_per_job, s.work_ms)
        key = "enqueueVipTimeMs" if priority == VIP else "enqueueNormalTimeMs"
        base = dict(self.timings)
        start = time.perf_counter()
        after = -1
        while seqs := self.store.pending_seqs(priority, after, s.normal_batch_size):
            self.jobs[priority] += self._enqueue(priority, queue, seqs, timeout)
            after = seqs[-1]
            self._add_time(key, time.perf_counter() - start, base)
            self.state.set(progressAt=time.time(), **self._timing_fields())
            self._tick(phase)
        self._add_time(key, time.perf_counter() - start, base)
        self.state.set(**self._timing_fields())

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self.state.set(phase=phase)
        log.info(event("phase", run=self.run_id, phase=phase))
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Save the record as it stands: a resume starts from it, and a store that cannot
        take it fails the run now rather than at the end."""
        self._last_checkpoint = time.monotonic()
        self.record.update(phase=self.phase.value, checkpointAt=iso(time.time()), **self._figures())
        self.store.save_run(self.record)

    def _tick(self, phase: Phase, report: bool = True) -> None:
        """Keep the lock alive, stop on a cancel or a lost state, checkpoint, report
        progress; called per chunk, page and poll."""
        now = time.monotonic()
        if now - self._last_refresh > LOCK_REFRESH_S:
            if not self.state.refresh(self.me):
                raise RunFailed("lost the run lock (Redis restarted or the run was taken over)")
            self._last_refresh = now
        ours, request = self.state.check(self.run_id, self.epoch)
        if not ours:
            self._redis_down = True
            raise RunFailed(REDIS_LOST)
        if request is not None:
            raise Cancelled(request)
        if now - self._last_checkpoint >= CHECKPOINT_S:
            self._checkpoint()
        log_due = now - self._last_log >= self.settings.log_progress_every_ms / 1000
        if not report or (self.progress is None and not log_due):
            return
        processed = sum(int(n or 0) for n in self.state.get(f"processed:{VIP}",
                                                            f"processed:{NORMAL}"))
        if self.progress is not None:
            self.progress(Progress(phase, self.settings.quantity, self.generated, processed))
        if log_due:
            self._last_log = now
            elapsed = time.perf_counter() - self.t0
            log.info(event(
                "progress", run=self.run_id, phase=phase, generated=self.generated,
                processed=processed, target=self.settings.quantity,
                rate=round(processed / elapsed) if elapsed > 0 else None,
                rssMb=logs.rss_mb() if self.settings.log_memory else None,
            ))

    def _cancel(self, request: dict[str, Any]) -> None:
        """Stop as `harness cancel` asked: nothing new runs, running batches stop at their
        next check, then the run is recorded ABORTED with what it did."""
        self._stopping = True
        log.warning(event("cancel", run=self.run_id, phase=self.phase,
                          purge=request["purge"], removePending=request["removePending"]))
        if request["purge"]:
            rq_queue.empty(self.conn)  # what we enqueued since the canceller emptied them
        running = rq_queue.wait_idle(self.conn, self.settings.cancel_timeout_s, POLL_S)
        stopped_at = time.time()
        if request["purge"]:
            try:
                rq_queue.purge(self.conn)  # and the finished and failed jobs' records
            except Exception:  # recording the run matters more
                log.exception("run %s: purge after cancel failed", self.run_id)
        t = time.perf_counter()
        try:
            removed = self.store.delete_pending() if request["removePending"] else 0
        except Exception:  # the store failing must not keep the run from being recorded
            log.exception("run %s: removing pending orders after cancel failed", self.run_id)
            removed = 0
        self.record["cancel"] = {
            "removePendingMs": _ms(time.perf_counter() - t),
            **request, "phase": self.phase.value, "requestedAt": iso(request["requestedAt"]),
            "lastJobStoppedMs": None if running else _ms(stopped_at - request["requestedAt"]),
            "stillRunning": running, "removedPending": removed,
        }
        self._finish(Phase.ABORTED, f"cancelled during {self.phase.value}"
                     + (f"; {running} job(s) still running after the timeout" if running else ""))
        if request["resetMetrics"]:
            self.state.clear()

    # -- the record ----------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        """Timings and counts so far: what a checkpoint saves and the final record starts from."""
        t = self.timings
        return {
            **{k: t.get(k) for k in TIMING_KEYS},
            "breakdown": {"generateMs": t.get("generateMs"), "insertMs": t.get("insertMs")},
            "counts": {"generated": self.generated, "vip": self.vip_total,
                       "normal": self.normal_total,
                       "jobs": {"vip": self.jobs[VIP], "normal": self.jobs[NORMAL]}},
        }

    def _finish(self, phase: Phase, error: str | None = None) -> None:
        """Compute every figure from the store, check it, and save the run record.

        When the store or Redis is what failed, it is not asked again (each call would wait
        out its timeout): the record then keeps its last checkpoint, which a resume uses.
        """
        total_s = time.perf_counter() - self.t0
        windows = {}
        if not self._store_down:
            try:
                windows = self.store.windows()
            except Exception as exc:  # the store failing is often why we are here
                if phase is Phase.DONE:
                    raise
                self._store_down = isinstance(exc, StoreError)
                error = f"{error}; and the store could not be read: {redact(str(exc))}"
        vip_fig, normal_fig = window_of(windows.get(VIP)), window_of(windows.get(NORMAL))
        processed = vip_fig["count"] + normal_fig["count"]
        if phase is Phase.DONE and (vip_fig["count"], normal_fig["count"]) != (
            self.vip_total, self.normal_total
        ):
            phase, error = Phase.ERROR, (
                f"store holds {vip_fig['count']}/{self.vip_total} VIP and "
                f"{normal_fig['count']}/{self.normal_total} NORMAL orders processed"
            )
        proof = barrier_proof(windows)
        if phase is Phase.DONE and not proof["held"]:
            phase, error = Phase.ERROR, f"VIP-first barrier violated: gap {proof['gapMs']} ms"
        rss: dict[str, int] = self._redis_or(self.state.worker_rss_kb, {})
        if phase is Phase.DONE:
            self.record.pop("stoppedInPhase", None)
        else:
            self.record["stoppedInPhase"] = self.phase.value  # what a resume reports it from
        figures = self._figures()
        figures["counts"]["processed"] = processed
        self.record.update({
            "phase": phase.value,
            "finishedAt": iso(time.time()),
            "error": error,
            **figures,
            "processing": {"vip": vip_fig, "normal": normal_fig},
            "totalTimeMs": _ms(total_s),
            "throughput": {
                "vip": vip_fig["perSec"],
                "normal": normal_fig["perSec"],
                "overall": round(processed / total_s, 1) if total_s else None,
            },
            "barrier": proof,
            "memory": {
                "coordinatorMaxRssMb": _max_rss_mb(),
                "workerMaxRssMb": {k: round(v / 1024, 1) for k, v in sorted(rss.items())},
            },
        })
        if not self._redis_down:
            self._redis_or(lambda: self.state.set(
                phase=phase, totalTimeMs=self.record["totalTimeMs"], finishedAt=time.time(),
                error=error or ""), None)
        log.log(logging.INFO if phase is Phase.DONE else logging.WARNING, event(
            "finished", run=self.run_id, phase=phase, totalMs=self.record["totalTimeMs"],
            processed=processed, rate=self.record["throughput"]["overall"],
            barrier="held" if proof["held"] else "violated", error=error))
        if self._store_down:
            log.error("run %s: its %s record was not saved (the store is unavailable); the store "
                      "keeps its last checkpoint", self.run_id, phase.value)
            return
        try:
            self.store.save_run(self.record)
        except Exception:
            if phase is Phase.DONE:
                raise
            log.exception("run %s: could not store its %s record", self.run_id, phase.value)

    def _redis_or(self, call: Callable[[], T], default: T) -> T:
        """``call()``, or ``default`` when Redis fails: recording a run must not need it."""
        try:
            return call()
        except RedisError as exc:
            self._redis_down = True
            log.warning("run %s: Redis unavailable while recording: %s", self.run_id, redact(str(exc)))
            return default

    def _stop_pool(self) -> None:
        """Warm-stop the pool: running batches finish, then the workers exit."""
        if self._pool is None or not self._pool.is_alive():
            return
        self._pool.terminate()  # SIGTERM: WorkerPool asks its workers to stop
        self._pool.join(POOL_STOP_TIMEOUT_S)
        if self._pool.is_alive():
            log.warning("worker pool did not stop within %ss; killing it", POOL_STOP_TIMEOUT_S)
            self._pool.kill()
            self._pool.join()


def run(
    settings: Settings, progress: ProgressCallback | None = None, start_workers: bool = True,
    force: bool = False, run_id: str | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline once and return its ``process_runs`` record. ``run_id``, when
    given, names the run (a launcher that must know it before the run starts)."""
    return Pipeline(settings, progress, start_workers, force, run_id=run_id).run()


def resume(
    settings: Settings, run_id: str | None = None, progress: ProgressCallback | None = None,
    start_workers: bool = True, concurrency: int | None = None,
) -> dict[str, Any]:
    """Finish a run that stopped before DONE (the latest, or ``run_id``, which must be the
    latest) with its own settings, or ``concurrency`` workers; return its record. Raises
    CannotResume, before writing anything, when the store no longer holds that run's orders."""
    return Pipeline(settings, progress, start_workers, resume=run_id or True,
                    concurrency=concurrency).run()
