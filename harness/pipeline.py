"""The coordinator: one run through the original service's phases, timed.

IDLE → GENERATING → WAITING_VIP_DRAIN → ENQUEUE_NORMAL → WAITING_NORMAL_DRAIN → DONE
(or ERROR / ABORTED).

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
from typing import Any

from redis import Redis

from harness import control, logs
from harness import queue as rq_queue
from harness.config import TIERS, Settings, redact
from harness.connection import connect_redis
from harness.logs import event
from harness.orders import NORMAL, VIP, generate
from harness.runs import barrier_proof, environment, iso, window_of
from harness.state import LockHolder, Phase, RunActive, RunState
from harness.store import Store, open_store
from harness.worker import run_pool_for

log = logging.getLogger("harness")
POLL_S = 0.02
LOCK_REFRESH_S = 5.0
POOL_STOP_TIMEOUT_S = 30.0
IDLE_WAIT_S = 10.0


class RunFailed(RuntimeError):
    """The run could not reach DONE; the record says why."""


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
        start_workers: bool = True, force: bool = False,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.start_workers = start_workers
        self.force = force
        self.run_id = new_run_id()
        self.me = LockHolder.mine(self.run_id)
        self.phase = Phase.GENERATING
        self.seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        self.vip_total = self.normal_total = self.generated = 0
        self.jobs = {VIP: 0, NORMAL: 0}
        self.timings: dict[str, float] = {}
        self._pool: multiprocessing.process.BaseProcess | None = None
        self._last_refresh = self._last_log = 0.0
        self._stopping = False
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
        open_store(self.settings).close()  # unreachable store: fail before any write
        control.take_lock(self.settings, self.conn, self.me, self.force)
        log.info(event("run", run=self.run_id, backend=self.settings.backend,
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
            self.state.release(self.me)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

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

    def _begin(self, setup_start: float) -> None:
        """Take over the live state, clear the last run's orders, then start the clock."""
        self.state.begin({
            "runId": self.run_id, "phase": Phase.GENERATING, "target": self.settings.quantity,
            "generated": 0, "startedAt": self.started, "workMs": self.settings.work_ms,
            "processed:VIP": 0, "processed:NORMAL": 0, "progressAt": self.started,
        })
        log.info(event("phase", run=self.run_id, phase=Phase.GENERATING))
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

    def _phases(self, setup_start: float) -> None:
        """Every phase in order; whatever stops them is recorded before this returns."""
        try:
            self._begin(setup_start)
            self._tick(Phase.GENERATING, report=False)  # a cancel that came during setup
            self._generate()
            self._wait_drain(VIP, self.vip_total, Phase.WAITING_VIP_DRAIN)
            self._enqueue_normal()
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
        except Exception as exc:
            log.exception("run %s failed", self.run_id)
            self._finish(Phase.ERROR, redact(f"{type(exc).__name__}: {exc}"))

    def _generate(self) -> None:
        """Generate and store chunk by chunk, enqueueing full VIP batches as they appear."""
        s = self.settings
        weights = [s.tier_weights[t] for t in TIERS]
        vip_q = rq_queue.queues(self.conn)[VIP]
        timeout = rq_queue.job_timeout(s.orders_per_job, s.work_ms)
        gen_s = insert_s = enqueue_s = 0.0
        vip_buffer: list[int] = []
        start = time.perf_counter()
        chunks = generate(self.seed, s.quantity, s.chunk_size, weights)
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
            self.jobs[VIP] += rq_queue.enqueue_batches(
                vip_q, self.run_id, VIP, rq_queue.batches(vip_buffer[:full], s.orders_per_job),
                timeout,
            )
            enqueue_s += time.perf_counter() - t
            self.vip_total += full
            del vip_buffer[:full]
            self.normal_total = self.generated - self.vip_total - len(vip_buffer)
            self.timings["generationTimeMs"] = _ms(time.perf_counter() - start - enqueue_s)
            self.timings["enqueueVipTimeMs"] = _ms(enqueue_s)
            self.state.set(
                generated=self.generated, vipTotal=self.vip_total, normalTotal=self.normal_total,
                generationTimeMs=self.timings["generationTimeMs"],
                enqueueVipTimeMs=self.timings["enqueueVipTimeMs"], progressAt=time.time(),
            )
            self._tick(Phase.GENERATING)
        self.timings["generateMs"] = _ms(gen_s)
        self.timings["insertMs"] = _ms(insert_s)

    def _wait_drain(self, priority: str, total: int, phase: Phase) -> None:
        """Block until ``total`` orders of ``priority`` are processed, failing fast."""
        self._enter(phase)
        start = time.perf_counter()
        while self.state.processed(priority) < total:
            failed = rq_queue.failed_count(self.conn)
            if failed:
                raise RunFailed(f"{failed} job(s) failed: {rq_queue.last_failure(self.conn)}")
            if self._pool is not None and not self._pool.is_alive():
                raise RunFailed("the worker pool exited before the queue drained")
            self._tick(phase)
            time.sleep(POLL_S)
        key = "waitVipDrainMs" if priority == VIP else "waitNormalDrainMs"
        self.timings[key] = _ms(time.perf_counter() - start)

    def _enqueue_normal(self) -> None:
        """Page pending NORMAL seqs out of the store and enqueue them, page by page."""
        s = self.settings
        self._enter(Phase.ENQUEUE_NORMAL)
        normal_q = rq_queue.queues(self.conn)[NORMAL]
        timeout = rq_queue.job_timeout(s.orders_per_job, s.work_ms)
        start = time.perf_counter()
        after = -1
        while seqs := self.store.pending_seqs(NORMAL, after, s.normal_batch_size):
            self.jobs[NORMAL] += rq_queue.enqueue_batches(
                normal_q, self.run_id, NORMAL, rq_queue.batches(seqs, s.orders_per_job), timeout
            )
            after = seqs[-1]
            self.timings["enqueueNormalTimeMs"] = _ms(time.perf_counter() - start)
            self.state.set(enqueueNormalTimeMs=self.timings["enqueueNormalTimeMs"],
                           progressAt=time.time())
            self._tick(Phase.ENQUEUE_NORMAL)
        self.timings["enqueueNormalTimeMs"] = _ms(time.perf_counter() - start)
        self.state.set(enqueueNormalTimeMs=self.timings["enqueueNormalTimeMs"])

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self.state.set(phase=phase)
        log.info(event("phase", run=self.run_id, phase=phase))

    def _tick(self, phase: Phase, report: bool = True) -> None:
        """Keep the lock alive, stop on a cancel, report progress; called per chunk, page
        and poll."""
        now = time.monotonic()
        if now - self._last_refresh > LOCK_REFRESH_S:
            if not self.state.refresh(self.me):
                raise RunFailed("lost the run lock (Redis restarted or the run was taken over)")
            self._last_refresh = now
        request = self.state.abort_request(self.run_id)
        if request is not None:
            raise Cancelled(request)
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

    def _finish(self, phase: Phase, error: str | None = None) -> None:
        """Compute every figure from the store, check it, and save the run record."""
        total_s = time.perf_counter() - self.t0
        try:
            windows = self.store.windows()
        except Exception as exc:  # the store failing is often why we are here
            windows = {}
            if phase is Phase.DONE:
                raise
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
        rss = self.state.worker_rss_kb()
        self.record.update({
            "phase": phase.value,
            "finishedAt": iso(time.time()),
            "error": error,
            "generationTimeMs": self.timings.get("generationTimeMs"),
            "enqueueVipTimeMs": self.timings.get("enqueueVipTimeMs"),
            "enqueueNormalTimeMs": self.timings.get("enqueueNormalTimeMs"),
            "waitVipDrainMs": self.timings.get("waitVipDrainMs"),
            "waitNormalDrainMs": self.timings.get("waitNormalDrainMs"),
            "setupMs": self.timings.get("setupMs"),
            "breakdown": {"generateMs": self.timings.get("generateMs"),
                          "insertMs": self.timings.get("insertMs")},
            "processing": {"vip": vip_fig, "normal": normal_fig},
            "totalTimeMs": _ms(total_s),
            "counts": {"generated": self.generated, "vip": self.vip_total,
                       "normal": self.normal_total, "processed": processed,
                       "jobs": {"vip": self.jobs[VIP], "normal": self.jobs[NORMAL]}},
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
        self.state.set(phase=phase, totalTimeMs=self.record["totalTimeMs"],
                       finishedAt=time.time(), error=error or "")
        log.log(logging.INFO if phase is Phase.DONE else logging.WARNING, event(
            "finished", run=self.run_id, phase=phase, totalMs=self.record["totalTimeMs"],
            processed=processed, rate=self.record["throughput"]["overall"],
            barrier="held" if proof["held"] else "violated", error=error))
        try:
            self.store.save_run(self.record)
        except Exception:
            if phase is Phase.DONE:
                raise
            log.exception("run %s: could not store its %s record", self.run_id, phase.value)

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
    force: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline once and return its ``process_runs`` record."""
    return Pipeline(settings, progress, start_workers, force).run()
