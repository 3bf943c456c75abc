"""Runs for people: the environment a run ran in, run history as tables, a run's summary.

The record itself (its parts, its versions, how a run ends) is :mod:`harness.record`.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from redis import Redis

from harness import numbers, reference
from harness.config import Settings, redact
from harness.extras import require
from harness.record import (
    BarrierProof,
    Environment,
    Memory,
    Overhead,
    Processing,
    RedisInfo,
    RunRecord,
    Throughput,
)
from harness.store import Store

if TYPE_CHECKING:
    import pandas as pd


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


GIT_TIMEOUT_S = 30.0


def _run_git(*args: str, timeout: float = GIT_TIMEOUT_S, cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str] | None:
    """``git ARGS`` in the harness's checkout (or ``cwd``); None if git is missing or overran
    ``timeout``.

    An overrun git gets SIGTERM, on which it removes its ``index.lock``: killed outright (as
    ``subprocess.run(timeout=...)`` does), a git refreshing the index left the lock behind,
    and every git command of the user's then failed ("index.lock: File exists")."""
    try:
        proc = subprocess.Popen(["git", *args], cwd=cwd or Path(__file__).parent, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def _git(*args: str) -> str | None:
    done = _run_git(*args)
    return done.stdout.strip() if done is not None and done.returncode == 0 else None


def _git_revision() -> tuple[str | None, bool | None]:
    """The checkout's short revision and whether tracked files differ from it (a result from
    a dirty tree cannot be reproduced from its revision alone); (None, None) outside git,
    and None for the flag when git cannot tell.

    Compared as git's clean filters see the files: a notebook run and saved with its outputs
    reads as unchanged through nbstripout (.gitattributes). ``git status`` reports such a
    file modified without running the filter (it said dirty after every notebook saved in
    JupyterLab), so the index is refreshed first, through the filter, and kept: the filter
    (1.8 s a notebook on a slow day: nbformat's imports) then runs once per change of a
    notebook, not in every run. ``git diff HEAD`` alone re-ran it each time without saving
    what it learnt: 5 s of every `harness run` with three touched notebooks."""
    revision = _git("rev-parse", "--short", "HEAD")
    if not revision:
        return None, None
    _run_git("update-index", "-q", "--refresh")  # takes the index lock; fails if it is taken
    diff = _run_git("--no-optional-locks", "diff", "--quiet", "--no-ext-diff", "HEAD", "--")
    return revision, None if diff is None else {0: False, 1: True}.get(diff.returncode)


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME") or release.get("NAME") or platform.system()
    except OSError:
        return f"{platform.system()} {platform.release()}"


PACKAGES = ("harness", "rq", "redis", "hiredis", "pymongo", "psutil", "click", "pandas", "numpy",
            "scipy", "matplotlib", "papermill")


def environment(settings: Settings, conn: Redis, store: Store) -> Environment:
    """Where and with what a run ran, as asv's machine.json says it: CPU model, cores, RAM,
    OS, Python, package versions, the backends' versions, git revision and dirty flag.
    Connection strings redacted."""
    try:
        redis_version = conn.info("server").get("redis_version")
    except Exception:  # an unanswered INFO must not fail the run record
        redis_version = None
    revision, dirty = _git_revision()
    return Environment(
        python=platform.python_version(),
        packages={p: _version(p) for p in PACKAGES},
        redis=RedisInfo(version=redis_version, url=redact(settings.redis_address)),
        store=store.describe(), cpu_count=os.cpu_count(), host=socket.gethostname(),
        platform=platform.platform(), git_revision=revision, git_dirty=dirty,
        cpu_model=_cpu_model(), cpu_cores=psutil.cpu_count(logical=False),
        memory_total_mb=round(psutil.virtual_memory().total / 2**20),
        os=_os_name(), machine=platform.machine(),
        python_implementation=platform.python_implementation(),
    )


def runs_table(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One flat row per run, with the columns of `harness runs --csv` (:data:`COLUMNS`)."""
    return [r.row() for r in records]


def runs_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as a DataFrame (one row per run, nested fields flattened with dots)."""
    pd = require("pandas")

    return pd.json_normalize([r.to_json() for r in records])


def format_summary(run: RunRecord) -> str:
    """A run record as the few lines a person reads after `harness run` (numbers written
    by :mod:`harness.numbers`, as everywhere)."""
    head = f"run {run.run_id}: {run.phase}" + (f" ({run.error})" if run.error else "")
    return "\n".join([head, *(f"  {label:<16}{value}" for label, value in summary_rows(run))])


def summary_rows(run: RunRecord) -> list[tuple[str, str]]:
    """The summary's lines as (label, value): what `harness run` prints and run.ipynb shows
    as a table."""
    n = numbers
    counts, proc = run.counts, run.processing or Processing()
    thr, barrier = run.throughput or Throughput(), run.barrier or BarrierProof()
    memory = run.memory or Memory()

    def window(ms: float | None, per_sec: float | None, what: str = "") -> str:
        return f"{n.duration(ms):>8}  ({n.rate(per_sec, ms)}{what})"

    rows = [
        ("orders", f"{n.count(counts.generated)} generated ({n.count(counts.vip)} VIP, "
                   f"{n.count(counts.normal)} NORMAL), {n.count(counts.processed or 0)} processed"),
        ("settings", f"chunk {n.count(run.param('chunk_size'))}, "
                     f"{n.count(run.param('orders_per_job'))} orders/job, {run.param('concurrency')} "
                     f"workers, seed {run.param('seed')}, store {run.backend}"),
        ("generation", f"{n.duration(run.generation_time_ms):>8}"),
        ("enqueue VIP", f"{n.duration(run.enqueue_vip_time_ms):>8}"),
        ("VIP window", window(proc.vip.time_ms, thr.vip)),
        ("enqueue NORMAL", f"{n.duration(run.enqueue_normal_time_ms):>8}"),
        ("NORMAL window", window(proc.normal.time_ms, thr.normal)),
        ("total", window(run.total_time_ms, thr.overall, " overall")),
        ("barrier", f"{'held' if barrier.held else 'VIOLATED'}, gap {n.latency(barrier.gap_ms)} "
                    f"(last VIP done {barrier.last_vip_processed_at}, first NORMAL started "
                    f"{barrier.first_normal_started_at})"),
        ("memory", _memory_line(memory)),
    ]
    if run.overhead is not None:
        rows.append(("wall", _overhead_line(run.overhead)))
    if (compared := reference.line_for(run)) is not None:
        rows.append(("vs README", compared))
    if run.latency is not None:
        simulated = bool(run.param("work_ms"))  # no work simulated: service time is ~0, noise
        for name, lat in (("VIP", run.latency.vip), ("NORMAL", run.latency.normal)):
            w, sv = lat.wait, lat.service
            line = f"wait p50 {n.latency(w.p50_ms)}, p99 {n.latency(w.p99_ms)}, max {n.latency(w.max_ms)}"
            if simulated:
                line += f"; service p50 {n.latency(sv.p50_ms)}, p99 {n.latency(sv.p99_ms)}"
            rows.append((f"{name} latency", line))
    return rows


def _overhead_line(o: Overhead) -> str:
    """The command's wall time, split so that a stall around the run shows as a figure."""

    s = numbers.duration
    where = "the command's start" if o.since == "process" else "the call"
    pool = "" if o.pool_stop_ms is None else f", of which stopping workers {s(o.pool_stop_ms)}"
    return (f"{s(o.wall_ms)} from {where} to the record saved: {s(o.before_ms)} before the run "
            f"(start-up, setup), {s(o.run_ms)} run, {s(o.after_ms)} after it{pool}")


def _memory_line(memory: Memory) -> str:
    """Sampled figures (psutil), or an old record's peak RSS (inherited by forked workers)."""
    if memory.method is None:
        return (f"peak RSS coordinator {memory.coordinator_max_rss_mb} MB, workers "
                + (", ".join(f"{v} MB" for v in memory.worker_max_rss_mb.values()) or "-"))
    coordinator = (f"coordinator peak {memory.coordinator_peak_rss_mb} MB RSS "
                   f"(+{memory.coordinator_growth_mb} MB during the run)")
    if not memory.workers:  # -c 0: the workers joined through Redis; no process here to sample
        return (f"{coordinator}, CPU {memory.coordinator_cpu_s} s; no local workers "
                "(those that joined are not sampled)")
    return (f"{coordinator}, {memory.workers} worker(s) peak {memory.worker_peak_uss_mb} MB USS; "
            f"CPU coordinator {memory.coordinator_cpu_s} s, workers {memory.workers_cpu_s} s")
