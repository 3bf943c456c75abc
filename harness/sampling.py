"""What a run's own processes use: memory and CPU, sampled with psutil while the run goes.

Why sample instead of ``getrusage``: ``ru_maxrss`` is a process's lifetime peak, and a
forked worker inherits its parent's. The same run measured 35-36 MB per worker from the
CLI, 109-131 MB from a notebook and 107-109 MB from a sweep: the figure said who launched
the run, not what the run used. So a thread in the coordinator looks at the coordinator and
at its worker pool's process tree every ``interval_s`` (100 ms) and keeps, per process, the
peak RSS and the peak USS (memory private to the process: pages a worker still shares with
the process it was forked from do not count), and the CPU time used.

The launcher-independent figures are a worker's peak USS and the coordinator's growth (peak
RSS during the run minus its RSS when the run started); the coordinator's own peak RSS is
kept too, and from a notebook it is the kernel's, pandas and all.

Cost: listing the pool's workers scans every process (1.4 ms), so it is done once a second;
USS costs more the bigger the process (4.5-9 ms a sample for four workers during a
200,000-order run), so it is read every 5th sample (500 ms) and at the end, RSS and CPU
time every sample. Each record keeps the sampler's own CPU time (``samplerCpuMs``).
Workers this run did not start (``harness worker`` elsewhere, ``--no-workers``) are not
measured.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import psutil

from harness.record import Memory, ProcessMemory

INTERVAL_S = 0.1
# Listing a process's children scans every process on the machine (1.4 ms here, more than
# sampling three processes): the pool's workers are listed again only this often.
CHILDREN_EVERY_S = 1.0
# USS reads /proc/PID/smaps_rollup, whose cost grows with the process's memory: during the
# 200,000-order sweep, sampling USS of every worker each time cost 4.5-9 ms a sample (6 % of
# a core). RSS and CPU are read every sample; USS every this many samples, and last.
USS_EVERY = 5
MB = 1024 * 1024


@dataclass
class _Seen:
    role: str
    peak_rss: int = 0
    peak_uss: int | None = None
    cpu_s: float | None = None


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class RunSampler:
    """Samples this process (the coordinator) and, once told, its worker pool's tree.

    ``start()`` takes the coordinator's starting RSS and CPU time; ``watch_pool(pid)`` adds
    the pool, ``watch(pid, role)`` another process; ``sample()`` takes one sample now (the
    pool's last, before it is stopped); ``stop()`` ends the thread and returns the figures.
    Safe to stop twice.
    """

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._me = psutil.Process(os.getpid())
        self._pool: psutil.Process | None = None
        self._workers: list[psutil.Process] = []
        self._others: list[tuple[psutil.Process, str]] = []  # e.g. the generator helper
        self._listed_at = 0.0
        self._seen: dict[int, _Seen] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples = 0
        self._sampler_cpu_s = 0.0
        self._start_rss = 0
        self._start_cpu = 0.0
        self._memory: Memory | None = None

    def start(self) -> None:
        self._start_rss = self._me.memory_info().rss
        self._start_cpu = _cpu(self._me)
        self._seen[self._me.pid] = _Seen("coordinator", peak_rss=self._start_rss)
        self._thread = threading.Thread(target=self._loop, name="harness-sampler", daemon=True)
        self._thread.start()

    def watch_pool(self, pid: int | None) -> None:
        if pid is None:
            return
        try:
            self._pool = psutil.Process(pid)
        except psutil.Error:
            self._pool = None
        self.sample(relist=True)

    def watch(self, pid: int, role: str) -> None:
        """Sample another process of the run too, as ``role``, while it lives (the process
        that generates every other chunk: see :mod:`harness.producer`)."""
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return
        with self._lock:
            self._others.append((proc, role))
            self._look(proc, role, full=True)  # once now: it may be gone by the next tick

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.sample()
        self._sampler_cpu_s += time.thread_time()

    def sample(self, relist: bool = False) -> None:
        """One look at every process of the run; processes that are gone are skipped.
        ``relist``: list the pool's workers again now (else at most every second)."""
        with self._lock:
            self._samples += 1
            full = relist or self._samples % USS_EVERY == 1
            self._look(self._me, "coordinator", full=False)
            # Gone ones are dropped: is_running() also tells a reused pid from the process.
            self._others = [(proc, role) for proc, role in self._others if proc.is_running()]
            for proc, role in self._others:
                self._look(proc, role, full=full)
            pool = self._pool
            if pool is None:
                return
            self._look(pool, "pool", full=full)
            now = time.monotonic()
            if relist or now - self._listed_at >= CHILDREN_EVERY_S:
                try:
                    self._workers = pool.children(recursive=True)
                except psutil.Error:
                    self._workers = []
                self._listed_at = now
            for proc in self._workers:
                self._look(proc, "worker", full=full)

    def _look(self, proc: psutil.Process, role: str, full: bool) -> None:
        seen = self._seen.setdefault(proc.pid, _Seen(role))
        try:
            with proc.oneshot():
                if full:
                    info = proc.memory_full_info()
                    seen.peak_uss = max(seen.peak_uss or 0, int(info.uss))
                else:
                    info = proc.memory_info()
                seen.peak_rss = max(seen.peak_rss, int(info.rss))
                seen.cpu_s = _cpu(proc)
        except psutil.Error:  # gone (a worker stopping), or a zombie: keep what was seen
            return

    def stop(self) -> Memory:
        """End sampling (one last sample first) and return the run's figures."""
        if self._memory is not None:
            return self._memory
        if self._thread is not None:
            self.sample(relist=True)
            self._stopping.set()
            self._thread.join()
        with self._lock:
            self._memory = self._figures()
        return self._memory

    def _figures(self) -> Memory:
        def mb(n: int | None) -> float | None:
            return None if n is None else round(n / MB, 1)

        me = self._seen.get(self._me.pid, _Seen("coordinator", peak_rss=self._start_rss))
        workers = [s for s in self._seen.values() if s.role == "worker"]
        processes = [ProcessMemory(s.role, pid, mb(s.peak_rss), mb(s.peak_uss),
                                   None if s.cpu_s is None else round(s.cpu_s, 3))
                     for pid, s in self._seen.items()]
        coordinator_cpu = (me.cpu_s - self._start_cpu) if me.cpu_s is not None else None
        return Memory(
            method="psutil", interval_ms=round(self.interval_s * 1000, 1), samples=self._samples,
            sampler_cpu_ms=round(self._sampler_cpu_s * 1000, 1),
            coordinator_start_rss_mb=mb(self._start_rss), coordinator_peak_rss_mb=mb(me.peak_rss),
            coordinator_growth_mb=mb(max(0, me.peak_rss - self._start_rss)),
            coordinator_cpu_s=None if coordinator_cpu is None else round(coordinator_cpu, 3),
            worker_peak_uss_mb=max((mb(s.peak_uss) or 0.0 for s in workers), default=None),
            worker_peak_rss_mb=max((mb(s.peak_rss) or 0.0 for s in workers), default=None),
            workers_cpu_s=round(sum(s.cpu_s or 0.0 for s in workers), 3) if workers else None,
            workers=len(workers), processes=processes,
        )
