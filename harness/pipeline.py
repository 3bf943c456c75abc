"""The coordinator: one run through the original service's phases, timed.

IDLE → GENERATING → WAITING_VIP_DRAIN → ENQUEUE_NORMAL → WAITING_NORMAL_DRAIN → DONE
(or ERROR / ABORTED).

The VIP-first barrier is held by construction: NORMAL jobs do not exist until the
``processed:VIP`` counter, which workers raise only after their batch is committed to the
store, reaches the number of VIP orders generated. So no NORMAL order can start while any
VIP order is unprocessed, whatever the worker count. The run record then proves it again
from the stored timestamps.

This module is the phase script, read top to bottom in :meth:`Pipeline._phases`. Looking
after the run while it goes (lock, signals, cancel, checkpoints, retries, the worker pool)
is :mod:`harness.supervision`; picking a stopped run up again is :mod:`harness.resume`;
taking the lock from whoever holds it is :mod:`harness.takeover`; the record and how it
ends is :mod:`harness.record`; writing the last record durably is :mod:`harness.history`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from harness import history, logs, run_ids, takeover
from harness import queue as rq_queue
from harness.codec import camel
from harness.config import TIERS, Settings, redact
from harness.connection import connect_redis
from harness.errors import RunActive, RunFailed, StaleRun, StoreError
from harness.inside import inside, latency_apart
from harness.lock import LockHolder, RunLock
from harness.logs import event
from harness.orders import NORMAL, VIP, seqs_of
from harness.producer import inserted_chunks
from harness.record import CancelInfo, Measured, Overhead, RunRecord, finish, iso, ms, new_run_id
from harness.resume import Resumption, load, restore
from harness.run_ids import IdTaken
from harness.runs import environment
from harness.state import CancelRequest, Phase, RunState
from harness.store import Fence, Store, open_store
from harness.supervision import (
    Cancelled,
    Interrupted,
    NoWorkers,
    Progress,
    ProgressCallback,
    StateLost,
    Supervisor,
)

log = logging.getLogger("harness")
POLL_S = 0.02
IDLE_WAIT_S = 10.0
# Record fields that are phase times; the live state carries them too, for status.
TIMINGS = ("generation_time_ms", "enqueue_vip_time_ms", "enqueue_normal_time_ms",
           "wait_vip_drain_ms", "wait_normal_drain_ms", "setup_ms")

__all__ = ["Pipeline", "Progress", "ProgressCallback", "new_run_id", "resume", "run"]


@dataclass(frozen=True)
class Ending:
    """How a run ends: its phase and error, the stop request that makes running batches
    stop (a cancel's own, or one of the run's), and what is known to be down."""

    phase: Phase
    error: str | None = None
    stop: CancelRequest | None = None
    cancelled: bool = False
    store_down: bool = False
    redis_down: bool = False


class Pipeline:
    """One run. Build it, then call :meth:`run`; the returned record is also stored."""

    def __init__(
        self, settings: Settings, progress: ProgressCallback | None = None,
        start_workers: bool = True, force: bool = False, resume: str | bool = False,
        concurrency: int | None = None, run_id: str | None = None,
        command_start: float | None = None,
    ) -> None:
        """``resume``: True for the latest run, or a run id; that run's record then gives
        the run id, seed and shape, ``settings`` where to connect, and ``concurrency``, if
        given, a new worker count. ``command_start``: when the command running this run
        started (a ``time.monotonic()`` reading; its process's start for ``harness run``), for
        the record's :class:`~harness.record.Overhead`; by default, when :meth:`run` is
        called. The overhead is timed on the monotonic clock: a step of the wall clock (a VM's
        time sync) once made a run's wall time exceed the command's."""
        self.settings, self.progress = settings, progress
        self.start_workers, self.force = start_workers, force
        self.resume, self.concurrency = resume, concurrency
        self.resumption: Resumption | None = None
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        if run_id is not None and not resume:  # a caller's id: checked (and see run_ids)
            run_ids.check(run_id)
        self.record = RunRecord(run_id=new_run_id() if run_id is None else run_id,
                                parameters={**settings.public_dict(), "seed": seed})
        self.phase = Phase.GENERATING
        self.epoch = 0
        self.generated = 0
        # Set again when setup ends; here so that a run stopped during setup still records.
        self.started, self.t0 = time.time(), time.perf_counter()
        self.command_start, self.since = command_start, "process" if command_start else "call"
        # This stretch's clock, start and end (monotonic, for the Overhead only).
        self.clock_at = self.ended_at = time.monotonic()
        self.conn: Redis
        self.store: Store
        self.sup: Supervisor

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def seed(self) -> int:
        return int(self.record.parameters["seed"])

    # -- the run -------------------------------------------------------------------------

    def run(self) -> RunRecord:
        """Run every phase; return the record (phase DONE, ERROR or ABORTED), also stored.

        Raises before writing anything if Redis or the store cannot be reached, or if
        another run is active (with ``force``, that run is cancelled first). A run whose
        coordinator provably died is taken over without ``force``.
        """
        if self.command_start is None:
            self.command_start = time.monotonic()
        logs.configure(self.settings)
        self.conn = connect_redis(self.settings)
        store = open_store(self.settings)  # unreachable store: fail before any write
        try:
            store.ping()  # reachable but unusable (locked by another process) too
            history.reconcile(self.settings, store)
            if self.resume:
                self._load(store)
            else:
                run_ids.refuse_taken(store, self.run_id)  # and again under the lock (_setup)
        finally:
            store.close()
        history.prepare_aside(self.settings)  # where the last record goes if the store fails
        me = LockHolder.mine(self.run_id)
        takeover.take_lock(self.settings, self.conn, me, self.force,
                           resume_of=self.run_id if self.resume else None)
        if self.resume:
            RunState(self.conn).clear_abort(self.run_id)  # a cancel or takeover of the stopped run
        log.info(event("resume" if self.resume else "run", run=self.run_id,
                       backend=self.settings.backend, quantity=self.settings.quantity,
                       chunk=self.settings.chunk_size, perJob=self.settings.orders_per_job,
                       concurrency=self.settings.concurrency, seed=self.seed,
                       redis=redact(self.settings.redis_address),
                       mongo=redact(self.settings.mongo_uri or "") or None))
        self.sup = Supervisor(self.settings, self.conn, me, self.epoch, self._checkpoint,
                              self._requeue, self.progress)
        previous = self.sup.catch_signals()
        try:
            self._run_locked()
        finally:
            self.sup.stopping = True
            try:
                RunLock(self.conn).release(me)
            except RedisError as exc:  # Redis down: the lock goes with it, or expires
                log.warning("could not release the run lock: %s", redact(str(exc)))
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.sup.signal is not None:
            raise Interrupted(self.sup.signal)
        return self.record

    def _load(self, store: Store) -> None:
        self.resumption = load(store, self.settings,
                               self.resume if isinstance(self.resume, str) else None,
                               self.concurrency)
        self.settings, self.record = self.resumption.settings, self.resumption.record
        self.started = self.resumption.started
        self.t0 = time.perf_counter() - (time.time() - self.started)

    def _run_locked(self) -> None:
        setup_start = time.perf_counter()
        self.state = RunState(self.conn)
        rq_queue.purge(self.conn)
        if running := rq_queue.wait_idle(self.conn, IDLE_WAIT_S, POLL_S):
            # A job of an earlier run still running would update this run's orders behind
            # the counters' back (the fence stops it only once this run claims the store).
            raise RunActive(
                f"{running} job(s) of an earlier run are still running after "
                f"{IDLE_WAIT_S:.0f}s; stop their workers, or wait for RQ to expire them")
        self.sup.sampler.start()
        if self.start_workers and self.settings.concurrency > 0:
            self.sup.start_pool()  # else workers join through Redis (`harness worker`)
        try:
            self.store = open_store(self.settings)
            try:
                self._phases(setup_start)
            finally:
                self.store.close()
        finally:
            self.sup.stopping = True
            self.sup.stop_pool()
            self.sup.sampler.stop()

    def _phases(self, setup_start: float) -> None:
        """Every phase in order, then the end, recorded once whatever stopped the phases."""
        try:
            self._setup(setup_start)
            self._enter(Phase.GENERATING)
            self.sup.tick(Phase.GENERATING, self.generated, report=False)  # stopped during setup?
            if self.resumption is not None:  # VIP orders stored before the stop
                self._enqueue_pending(VIP, Phase.GENERATING)
            self._generate()
            self._enter(Phase.WAITING_VIP_DRAIN)
            self._timed("wait_vip_drain_ms", lambda: self.sup.wait_drain(
                VIP, self.record.counts.vip, Phase.WAITING_VIP_DRAIN, self.generated))
            self._enter(Phase.ENQUEUE_NORMAL)
            self._enqueue_pending(NORMAL, Phase.ENQUEUE_NORMAL, self._generated_normal())
            self._enter(Phase.WAITING_NORMAL_DRAIN)
            self._timed("wait_normal_drain_ms", lambda: self.sup.wait_drain(
                NORMAL, self.record.counts.normal, Phase.WAITING_NORMAL_DRAIN, self.generated))
            self.store.verify()
            ending = Ending(Phase.DONE)
        except IdTaken:  # refused before this run wrote anything: it has no record to end
            raise
        except BaseException as exc:
            ending = self._ending_of(exc)
        self._end(ending)

    def _ending_of(self, exc: BaseException) -> Ending:
        """How the run ends when ``exc`` stopped its phases."""
        keep = CancelRequest(self.run_id, purge=False, remove_pending=False)
        if isinstance(exc, Interrupted):
            return Ending(Phase.ABORTED, f"interrupted ({exc})",
                          CancelRequest(self.run_id, purge=True, remove_pending=False))
        if isinstance(exc, Cancelled):
            return Ending(Phase.ABORTED, f"cancelled during {self.phase.value}", exc.request,
                          cancelled=True)
        if isinstance(exc, NoWorkers):  # nothing ran: leave nothing queued either
            return Ending(Phase.ERROR, str(exc),
                          CancelRequest(self.run_id, purge=True, remove_pending=False))
        if isinstance(exc, StateLost):
            return Ending(Phase.ERROR, str(exc), redis_down=True)
        if isinstance(exc, StaleRun):
            log.error("run %s: %s", self.run_id, exc)
            return Ending(Phase.ERROR, f"another run took the store over: {exc}", store_down=True)
        if isinstance(exc, RunFailed):
            return Ending(Phase.ERROR, redact(str(exc)), keep)
        if isinstance(exc, StoreError):
            log.error("run %s: %s", self.run_id, exc)
            return Ending(Phase.ERROR, f"store unavailable: {redact(str(exc))}; the orders it holds "
                          "are kept: `harness resume` finishes the run once it is back", keep,
                          store_down=True)
        if isinstance(exc, RedisError):
            log.error("run %s: Redis failed: %s", self.run_id, redact(str(exc)))
            return Ending(Phase.ERROR, f"Redis failed ({type(exc).__name__}: {redact(str(exc))}); "
                          "every order is safe in the store: `harness resume` finishes the run "
                          "once Redis answers", redis_down=True)
        if isinstance(exc, KeyboardInterrupt | SystemExit):  # not a signal we caught: record, re-raise
            self.sup.signal = self.sup.signal or type(exc).__name__
            return Ending(Phase.ABORTED, f"interrupted ({type(exc).__name__})",
                          CancelRequest(self.run_id, purge=True, remove_pending=False))
        log.error("run %s failed", self.run_id, exc_info=exc)
        return Ending(Phase.ERROR, redact(f"{type(exc).__name__}: {exc}"), keep)

    # -- setup ---------------------------------------------------------------------------

    def _setup(self, setup_start: float) -> None:
        """Own the store (its fence), take over the live state, then start the clock: a new
        run clears the last run's orders first; a resumed one learns where it stopped.

        A new run first checks, now that it holds the lock, that its id is still free: a
        run given the same id that ended since the first check is not overwritten."""
        if self.resumption is None:
            run_ids.refuse_taken(self.store, self.run_id)
        previous = self.store.fence()
        self.epoch = self.store.claim(self.run_id).epoch
        self.sup.epoch = self.epoch
        takeover.close_orphan(self.store, previous, self.run_id)
        self.state.begin(self._state_fields())
        environment_now = environment(self.settings, self.conn, self.store)
        if self.resumption is not None:
            restored = restore(self.store, self.state, self.resumption, self.epoch,
                               self._timing_fields())
            self.generated = restored.generated
            self.record.counts.vip = restored.vip_total
            self.record.counts.normal = restored.normal_total
            self._add_time("setup_ms", time.perf_counter() - setup_start, self._times())
            self.clock_at = time.monotonic()
        else:
            self.store.clear_orders()  # the orders collection holds the current run only
            # The clock starts here: clearing the last run and starting workers is setup,
            # reported apart as setupMs, not part of the pipeline's end-to-end time.
            self.started, self.t0 = time.time(), time.perf_counter()
            self.sup.t0 = self.t0
            self.clock_at = time.monotonic()
            self.record.setup_ms = ms(self.t0 - setup_start)
            self.record.started_at = iso(self.started)
            self.state.set(startedAt=self.started, progressAt=self.started)
        self.record.environment = environment_now
        self.store.save_run(self.record)

    def _state_fields(self) -> dict[str, Any]:
        s = self.settings
        shape = {"quantity": s.quantity, "chunkSize": s.chunk_size, "ordersPerJob": s.orders_per_job,
                 "concurrency": s.concurrency, "seed": self.seed, "tierMix": s.tier_mix,
                 "workMs": s.work_ms, "normalBatchSize": s.normal_batch_size, "backend": s.backend}
        return {
            "runId": self.run_id, "epoch": self.epoch, "phase": Phase.GENERATING,
            "target": self.settings.quantity, "generated": self.generated,
            "startedAt": self.started, "workMs": self.settings.work_ms,
            "processed:VIP": 0, "processed:NORMAL": 0, "progressAt": time.time(),
            "settings": json.dumps(shape),  # the status document shows them
        }

    # -- the phases ----------------------------------------------------------------------

    def _generate(self) -> None:
        """Generate and store chunk by chunk, enqueueing full VIP batches as they appear.

        Two processes make and store alternate chunks, in order (:mod:`harness.producer`);
        the record's generateMs and insertMs add up what both spent, so they overlap each
        other and exceed the phase's time. A resumed run starts at the first chunk the
        store lacks.
        """
        s, counts = self.settings, self.record.counts
        weights = [s.tier_weights[t] for t in TIERS]
        vip_q = rq_queue.queues(self.conn)[VIP]
        timeout = rq_queue.job_timeout(s.orders_per_job, s.work_ms)
        gen_s = insert_s = enqueue_s = 0.0
        vip_buffer: list[int] = []
        base = self._times()  # times from before a resume
        start = time.perf_counter()
        chunks = inserted_chunks(self.store, s, self.seed, Fence(self.run_id, self.epoch),
                                 self.generated, weights,
                                 lambda pid: self.sup.sampler.watch(pid, "generator"))
        with contextlib.closing(chunks):
            for step in chunks:
                for chunk in step:
                    gen_s += chunk.generate_s
                    insert_s += chunk.insert_s
                    self.generated += chunk.count
                    vip_buffer.extend(chunk.vip)
                last = self.generated == s.quantity
                full = len(vip_buffer) if last else len(vip_buffer) // s.orders_per_job * s.orders_per_job
                t = time.perf_counter()
                counts.jobs.vip += self._enqueue(VIP, vip_q, vip_buffer[:full], timeout)
                enqueue_s += time.perf_counter() - t
                counts.vip += full
                del vip_buffer[:full]
                counts.normal = self.generated - counts.vip - len(vip_buffer)
                self._add_time("generation_time_ms", time.perf_counter() - start - enqueue_s, base)
                self._add_time("enqueue_vip_time_ms", enqueue_s, base)
                self.state.set(generated=self.generated, vipTotal=counts.vip,
                               normalTotal=counts.normal, progressAt=time.time(),
                               **self._timing_fields())
                self.sup.tick(Phase.GENERATING, self.generated)
        counts.generated = self.generated
        breakdown = self.record.breakdown
        breakdown.generate_ms = round((breakdown.generate_ms or 0) + ms(gen_s), 3)
        breakdown.insert_ms = round((breakdown.insert_ms or 0) + ms(insert_s), 3)

    def _pending_pages(self, priority: str) -> Iterator[list[int]]:
        """The pending seqs of ``priority``, paged out of the store."""
        after = -1
        while seqs := self.store.pending_seqs(priority, after, self.settings.normal_batch_size):
            yield seqs
            after = seqs[-1]

    def _generated_normal(self) -> Iterator[list[int]] | None:
        """A new run's NORMAL seqs, drawn again from its seed in the store's pages: every
        one is pending, since none is enqueued before the VIP drain. A resumed run's are
        paged out of the store (some may be processed), so: None."""
        if self.resumption is not None:
            return None
        s = self.settings
        return seqs_of(NORMAL, self.seed, s.quantity, s.chunk_size,
                       [s.tier_weights[t] for t in TIERS], s.normal_batch_size)

    def _enqueue_pending(self, priority: str, phase: Phase,
                         pages: Iterator[list[int]] | None = None) -> None:
        """Enqueue the pending seqs of ``priority`` page by page: ``pages``, or else those
        paged out of the store."""
        s = self.settings
        queue = rq_queue.queues(self.conn)[priority]
        timeout = rq_queue.job_timeout(s.orders_per_job, s.work_ms)
        name = "enqueue_vip_time_ms" if priority == VIP else "enqueue_normal_time_ms"
        base = self._times()
        start = time.perf_counter()
        for seqs in self._pending_pages(priority) if pages is None else pages:
            jobs = self._enqueue(priority, queue, seqs, timeout)
            if priority == VIP:
                self.record.counts.jobs.vip += jobs
            else:
                self.record.counts.jobs.normal += jobs
            self._add_time(name, time.perf_counter() - start, base)
            self.state.set(progressAt=time.time(), **self._timing_fields())
            self.sup.tick(phase, self.generated)
        self._add_time(name, time.perf_counter() - start, base)
        self.state.set(**self._timing_fields())

    def _requeue(self, priority: str) -> int:
        """Enqueue the pending orders of ``priority`` again (a batch vanished with its
        worker); return how many jobs that made."""
        before = self.record.counts.jobs.vip + self.record.counts.jobs.normal
        self._enqueue_pending(priority, self.phase)
        return self.record.counts.jobs.vip + self.record.counts.jobs.normal - before

    def _enqueue(self, priority: str, queue: Any, seqs: list[int], timeout: int) -> int:
        if seqs:
            self.sup.jobs_enqueued()
        return rq_queue.enqueue_batches(
            queue, self.run_id, priority, rq_queue.batches(seqs, self.settings.orders_per_job),
            timeout, epoch=self.epoch, retry_intervals=self.settings.retry_intervals,
        )

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self.state.set(phase=phase, **{f"at:{phase.value}": time.time()})  # the status's phase times
        log.info(event("phase", run=self.run_id, phase=phase))
        self.sup.checkpoint_now()

    def _checkpoint(self) -> None:
        """Save the record as it stands: a resume starts from it, and a store that cannot
        take it (or that was replaced under the run) fails the run now, not at the end."""
        self.record.phase = self.phase.value
        self.record.checkpoint_at = iso(time.time())
        self.record.counts.generated = self.generated
        self.store.verify()
        self.store.save_run(self.record)

    # -- times ---------------------------------------------------------------------------

    def _times(self) -> dict[str, float]:
        """The phase times so far (a resumed run adds this stretch's to its earlier ones)."""
        return {k: getattr(self.record, k) or 0.0 for k in TIMINGS}

    def _add_time(self, name: str, seconds: float, base: dict[str, float]) -> None:
        """``name`` = its time before this stretch began (``base``) + this stretch's."""
        setattr(self.record, name, round(base.get(name, 0.0) + ms(seconds), 3))

    def _timed(self, name: str, wait: Any) -> None:
        base, start = self._times(), time.perf_counter()
        wait()
        self._add_time(name, time.perf_counter() - start, base)

    def _timing_fields(self) -> dict[str, float]:
        return {camel(k): v for k in TIMINGS if (v := getattr(self.record, k)) is not None}

    # -- the end -------------------------------------------------------------------------

    def _end(self, ending: Ending) -> None:
        """Stop the work, then compute every figure from the store and save the record.

        A run that did not reach DONE first leaves a stop request (``stop``: a cancel's own,
        or one of ours) so that running batches stop at their next check, waits for them and
        stops its workers: the record is written when nothing moves any more, from what the
        store holds, so it matches the store. When the store or Redis is what failed, it
        is not asked again (each call would wait out its timeout).
        """
        phase, error, stop = ending.phase, ending.error, ending.stop
        self.sup.stopping = True
        # A coordinator that lost its run (paused past its lock, then another run or a
        # takeover came) touches neither the live state and queues nor the store's orders,
        # which are someone else's now: it only stops its workers and closes its record.
        redis_down = ending.redis_down or not self._owns_live_state()
        store_down = ending.store_down or not self._owns_store()
        if redis_down and not ending.redis_down:
            stop = None
            if phase is not Phase.DONE:
                error = f"{error}; the run's live state is another's now (or Redis is gone)"
        total_s = time.perf_counter() - self.t0
        self.ended_at = time.monotonic()
        # Stopping the work and the pool and saving the record can outlast the lock's 30 s.
        with self.sup.keeping_lock():
            self._finish_end(ending, phase, error, stop, store_down, redis_down, total_s)

    def _finish_end(self, ending: Ending, phase: Phase, error: str | None,
                    stop: CancelRequest | None, store_down: bool, redis_down: bool,
                    total_s: float) -> None:
        """The rest of :meth:`_end`, under the lock kept alive (``keeping_lock``)."""
        running, stopped_at = 0, time.time()
        if stop is not None and not redis_down:
            # With the store gone, nothing can commit and nothing could be measured: stop
            # asking, do not wait; the pool is stopped once the run is recorded.
            running, stopped_at, stop = self._stop_work(stop, wait=not store_down)
        if not store_down:
            self.sup.stop_pool()  # warm: a batch in flight finishes or stops at its next check
        measured = self._measure(phase, store_down, total_s)  # before pending orders go
        cancel = None
        if ending.cancelled and stop is not None:
            cancel = self._cancel_info(stop, running, stopped_at, store_down)
            error = error if not running else f"{error}; {running} job(s) still running after the timeout"
        finish(self.record, phase, error, measured, cancel=cancel)
        self.record.overhead = self._overhead()
        final = Phase(self.record.phase)
        if not redis_down:
            self._redis_or(lambda: self.state.set(
                phase=final, totalTimeMs=self.record.total_time_ms, finishedAt=time.time(),
                error=self.record.error or ""))
        where = history.save_final(self.settings, None if store_down else self.store, self.record)
        log.log(logging.INFO if final is Phase.DONE else logging.WARNING, event(
            "finished", run=self.run_id, phase=final, totalMs=self.record.total_time_ms,
            processed=self.record.counts.processed,
            rate=self.record.throughput.overall if self.record.throughput else None,
            barrier=None if self.record.barrier is None
            else ("held" if self.record.barrier.held else "violated"),
            error=self.record.error, record=None if where == "store" else where))
        if final is not Phase.DONE and stop is not None and stop.reset_metrics and not redis_down:
            self._redis_or(self.state.clear)
        # The progress bar's last word: where the run ended (a bar of a DONE run reads 100 %).
        if not redis_down:
            try:
                final_s = (self.record.total_time_ms or 0.0) / 1000 or None
                self._redis_or(lambda: self.sup.report(final, self.generated, elapsed_s=final_s))
            except Exception:  # a caller's callback failing must not undo the run's end
                log.exception("run %s: the progress callback failed on the last report", self.run_id)

    def _overhead(self) -> Overhead:
        """The command's wall time so far and where it went (the record is saved next)."""
        now = time.monotonic()
        start = self.command_start if self.command_start is not None else self.clock_at
        pool_stop = self.sup.pool_stop_s
        return Overhead(
            since=self.since, wall_ms=ms(now - start),
            before_ms=ms(max(0.0, self.clock_at - start)),
            run_ms=ms(self.ended_at - self.clock_at), after_ms=ms(now - self.ended_at),
            pool_stop_ms=None if pool_stop is None else ms(pool_stop))

    def _owns_live_state(self) -> bool:
        """The live state and the lock are still this run's (one round trip each)."""
        try:
            ours, _ = self.state.check(self.run_id, self.epoch)
            return ours and RunLock(self.conn).holder() == self.sup.me
        except RedisError:
            return False

    def _owns_store(self) -> bool:
        """The store's fence is still this run's: its orders are this run's orders."""
        try:
            return self.store.fence() == Fence(self.run_id, self.epoch)
        except StoreError:
            return False

    def _stop_work(self, stop: CancelRequest, wait: bool = True) -> tuple[int, float, CancelRequest]:
        """Ask running batches to stop (the first request for this run wins: a canceller's
        options stand), drop queued jobs if asked, and wait for running ones; return how
        many still run after the cancel timeout, when they stopped, and the request."""
        try:
            stop = self.state.request_abort(stop)
            if stop.purge:
                rq_queue.empty(self.conn)
            running = rq_queue.wait_idle(self.conn, self.settings.cancel_timeout_s if wait else 0,
                                         POLL_S)
            stopped_at = time.time()
            if stop.purge:
                rq_queue.purge(self.conn)  # and the finished and failed jobs' records
            return running, stopped_at, stop
        except RedisError as exc:
            log.warning("run %s: Redis failed while stopping: %s", self.run_id, redact(str(exc)))
            return 0, time.time(), stop

    def _cancel_info(self, request: CancelRequest, running: int, stopped_at: float,
                     store_down: bool) -> CancelInfo:
        t = time.perf_counter()
        removed = 0
        if request.remove_pending and not store_down:
            try:
                removed = self.store.delete_pending()
            except Exception:  # the store failing must not keep the run from being recorded
                log.exception("run %s: removing pending orders after cancel failed", self.run_id)
        return CancelInfo(
            run_id=request.run_id, purge=request.purge, remove_pending=request.remove_pending,
            reset_metrics=request.reset_metrics, requested_at=iso(request.requested_at),
            phase=self.phase.value, still_running=running, removed_pending=removed,
            last_job_stopped_ms=None if running else ms(stopped_at - request.requested_at),
            remove_pending_ms=ms(time.perf_counter() - t), by_coordinator=True)

    def _measure(self, phase: Phase, store_down: bool, total_s: float) -> Measured:
        memory = self.sup.sampler.stop()
        if store_down:
            return Measured(windows=None, total_s=total_s, memory=memory)
        with ThreadPoolExecutor(1, thread_name_prefix="latency") as pool:
            try:  # a store file removed under the run: opening its path would make a new one
                self.store.verify()
                apart = latency_apart(pool, lambda: open_store(self.settings),
                                      Fence(self.run_id, self.epoch))
            except StoreError:
                apart = None
            try:
                windows = self.store.windows()
                tally = None if phase is Phase.DONE else self.store.tally()
            except StoreError as exc:
                log.error("run %s: the store could not be read at the end: %s", self.run_id, exc)
                return Measured(windows=None, total_s=total_s, memory=memory)
            timeline, latency = inside(self.store, self.started, total_s, apart)
        return Measured(windows=windows, total_s=total_s, memory=memory, tally=tally,
                        timeline=timeline, latency=latency)

    def _redis_or(self, call: Any, default: Any = None) -> Any:
        """``call()``, or ``default`` when Redis fails: recording a run must not need it."""
        try:
            return call()
        except RedisError as exc:
            log.warning("run %s: Redis unavailable while recording: %s", self.run_id, redact(str(exc)))
            return default


def run(
    settings: Settings, progress: ProgressCallback | None = None, start_workers: bool = True,
    force: bool = False, run_id: str | None = None, command_start: float | None = None,
) -> RunRecord:
    """Run the whole pipeline once and return its record. ``run_id``, when given, names the
    run (a launcher that must know it before the run starts); ``command_start``, when the
    command began (see :class:`Pipeline`)."""
    return Pipeline(settings, progress, start_workers, force, run_id=run_id,
                    command_start=command_start).run()


def resume(
    settings: Settings, run_id: str | None = None, progress: ProgressCallback | None = None,
    start_workers: bool = True, concurrency: int | None = None, command_start: float | None = None,
) -> RunRecord:
    """Finish a run that stopped before DONE (the latest, or ``run_id``, which must be the
    latest) with its own settings, or ``concurrency`` workers; return its record. Raises
    CannotResume, before writing anything, when the store no longer holds that run's orders."""
    return Pipeline(settings, progress, start_workers, resume=run_id or True,
                    concurrency=concurrency, command_start=command_start).run()
