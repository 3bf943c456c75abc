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

from redis import Redis

from harness.config import Settings, redact
from harness.extras import require
from harness.record import (
    BarrierProof,
    Environment,
    Memory,
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


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(settings: Settings, conn: Redis, store: Store) -> Environment:
    """Where and with what a run ran; connection strings redacted."""
    try:
        redis_version = conn.info("server").get("redis_version")
    except Exception:  # an unanswered INFO must not fail the run record
        redis_version = None
    return Environment(
        python=platform.python_version(),
        packages={p: _version(p) for p in ("harness", "rq", "redis", "pymongo", "pandas")},
        redis=RedisInfo(version=redis_version, url=redact(settings.redis_address)),
        store=store.describe(), cpu_count=os.cpu_count(), host=socket.gethostname(),
        platform=platform.platform(), git_revision=_git_revision(),
    )


def runs_table(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One flat row per run, with the columns of `harness runs --csv` (:data:`COLUMNS`)."""
    return [r.row() for r in records]


def runs_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as a DataFrame (one row per run, nested fields flattened with dots)."""
    pd = require("pandas")

    return pd.json_normalize([r.to_json() for r in records])


def format_summary(run: RunRecord) -> str:
    """A run record as the few lines a person reads after `harness run`."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value / 1000:8.2f} s"

    counts, proc = run.counts, run.processing or Processing()
    thr, barrier = run.throughput or Throughput(), run.barrier or BarrierProof()
    memory = run.memory or Memory()
    lines = [
        f"run {run.run_id}: {run.phase}" + (f" ({run.error})" if run.error else ""),
        f"  orders          {counts.generated:,} generated ({counts.vip:,} VIP, "
        f"{counts.normal:,} NORMAL), {counts.processed or 0:,} processed",
        f"  settings        chunk {run.param('chunk_size')}, {run.param('orders_per_job')} "
        f"orders/job, {run.param('concurrency')} workers, seed {run.param('seed')}, "
        f"store {run.backend}",
        f"  generation      {ms(run.generation_time_ms)}",
        f"  enqueue VIP     {ms(run.enqueue_vip_time_ms)}",
        f"  VIP window      {ms(proc.vip.time_ms)}  ({thr.vip or 0:,.0f} orders/s)",
        f"  enqueue NORMAL  {ms(run.enqueue_normal_time_ms)}",
        f"  NORMAL window   {ms(proc.normal.time_ms)}  ({thr.normal or 0:,.0f} orders/s)",
        f"  total           {ms(run.total_time_ms)}  ({thr.overall or 0:,.0f} orders/s overall)",
        f"  barrier         {'held' if barrier.held else 'VIOLATED'}, gap {barrier.gap_ms} ms "
        f"(last VIP done {barrier.last_vip_processed_at}, first NORMAL started "
        f"{barrier.first_normal_started_at})",
        f"  peak memory     coordinator {memory.coordinator_max_rss_mb} MB, workers "
        + (", ".join(f"{v} MB" for v in memory.worker_max_rss_mb.values()) or "-"),
    ]
    return "\n".join(lines)
