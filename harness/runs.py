"""``process_runs`` records: the environment a run ran in, its barrier proof, and run history
as tables.

The barrier proof is computed from the stored orders, not from what the coordinator
believes happened: the last VIP order's ``processedAt`` must not be later than the first
NORMAL order's ``startedAt``.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis import Redis

from harness.config import Settings, redact
from harness.orders import NORMAL, VIP
from harness.store import Store, Window

if TYPE_CHECKING:
    import pandas as pd

# Columns of `harness runs`, in order: (column, path in the record).
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("runId", "runId"),
    ("sweepId", "parameters.sweep_id"),
    ("startedAt", "startedAt"),
    ("phase", "phase"),
    ("backend", "environment.store.backend"),
    ("quantity", "parameters.quantity"),
    ("chunkSize", "parameters.chunk_size"),
    ("ordersPerJob", "parameters.orders_per_job"),
    ("concurrency", "parameters.concurrency"),
    ("totalTimeMs", "totalTimeMs"),
    ("generationTimeMs", "generationTimeMs"),
    ("enqueueVipTimeMs", "enqueueVipTimeMs"),
    ("enqueueNormalTimeMs", "enqueueNormalTimeMs"),
    ("waitVipDrainMs", "waitVipDrainMs"),
    ("waitNormalDrainMs", "waitNormalDrainMs"),
    ("setupMs", "setupMs"),
    ("vipTimeMs", "processing.vip.timeMs"),
    ("normalTimeMs", "processing.normal.timeMs"),
    ("overallPerSec", "throughput.overall"),
    ("barrierHeld", "barrier.held"),
    ("barrierGapMs", "barrier.gapMs"),
    ("resumes", "resumes"),  # how many times it was resumed: its times include downtime
    ("error", "error"),
)

# The columns the plain `harness runs` table shows; --csv gives all of RUN_COLUMNS, --json
# the whole records.
BRIEF_COLUMNS = (
    "runId", "phase", "backend", "quantity", "ordersPerJob", "concurrency", "totalTimeMs",
    "overallPerSec", "barrierHeld", "resumes", "error",
)


def iso(seconds: float | None) -> str | None:
    """Unix seconds as an ISO-8601 UTC string with milliseconds."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def window_figures(
    count: int, start: float | None, end: float | None
) -> dict[str, Any]:
    """One priority's processing window as status and run records show it."""
    time_ms = round((end - start) * 1000, 3) if start is not None and end is not None else None
    per_sec = round(count / (time_ms / 1000), 1) if time_ms else None
    return {"start": iso(start), "end": iso(end), "timeMs": time_ms, "count": count,
            "perSec": per_sec}


def window_of(window: Window | None) -> dict[str, Any]:
    """:func:`window_figures` of a stored window (an empty one when nothing was processed)."""
    if window is None:
        return window_figures(0, None, None)
    return window_figures(window.count, window.first_started, window.last_processed)


def barrier_proof(windows: dict[str, Window]) -> dict[str, Any]:
    """Did every VIP order finish before any NORMAL order started? From stored timestamps.

    With no VIP or no NORMAL orders processed there is nothing to order, and the barrier
    holds trivially.
    """
    vip, normal = windows.get(VIP), windows.get(NORMAL)
    last_vip = vip.last_processed if vip else None
    first_normal_start = normal.first_started if normal else None
    first_normal_done = normal.first_processed if normal else None
    gap_ms = None
    held = True
    if last_vip is not None and first_normal_start is not None:
        gap_ms = round((first_normal_start - last_vip) * 1000, 3)
        held = first_normal_start >= last_vip
    return {
        "lastVipProcessedAt": iso(last_vip),
        "firstNormalStartedAt": iso(first_normal_start),
        "firstNormalProcessedAt": iso(first_normal_done),
        "gapMs": gap_ms,
        "held": held,
    }


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


def environment(settings: Settings, conn: Redis, store: Store) -> dict[str, Any]:
    """Where and with what a run ran; connection strings redacted."""
    try:
        redis_version = conn.info("server").get("redis_version")
    except Exception:  # an unanswered INFO must not fail the run record
        redis_version = None
    return {
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in ("harness", "rq", "redis", "pymongo", "pandas")},
        "redis": {"version": redis_version, "url": redact(settings.redis_address)},
        "store": store.describe(),
        "cpuCount": os.cpu_count(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "gitRevision": _git_revision(),
    }


def _dig(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return len(value) if isinstance(value, list) else value


def runs_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per run, with the columns of `harness runs`."""
    return [{col: _dig(r, path) for col, path in RUN_COLUMNS} for r in records]


def runs_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Run records as a DataFrame (one row per run, nested fields flattened with dots)."""
    import pandas as pd

    return pd.json_normalize(records)


def format_summary(record: dict[str, Any]) -> str:
    """A run record as the few lines a person reads after `harness run`."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value / 1000:8.2f} s"

    counts = record.get("counts", {})
    proc = record.get("processing", {})
    thr = record.get("throughput", {})
    barrier = record.get("barrier", {})
    memory = record.get("memory", {})
    workers = memory.get("workerMaxRssMb", {})
    params = record.get("parameters", {})
    lines = [
        f"run {record['runId']}: {record['phase']}"
        + (f" ({record['error']})" if record.get("error") else ""),
        f"  orders          {counts.get('generated', 0):,} generated "
        f"({counts.get('vip', 0):,} VIP, {counts.get('normal', 0):,} NORMAL), "
        f"{counts.get('processed', 0):,} processed",
        f"  settings        chunk {params.get('chunk_size')}, {params.get('orders_per_job')} "
        f"orders/job, {params.get('concurrency')} workers, seed {params.get('seed')}, "
        f"store {record.get('environment', {}).get('store', {}).get('backend')}",
        f"  generation      {ms(record.get('generationTimeMs'))}",
        f"  enqueue VIP     {ms(record.get('enqueueVipTimeMs'))}",
        f"  VIP window      {ms(proc.get('vip', {}).get('timeMs'))}  "
        f"({thr.get('vip') or 0:,.0f} orders/s)",
        f"  enqueue NORMAL  {ms(record.get('enqueueNormalTimeMs'))}",
        f"  NORMAL window   {ms(proc.get('normal', {}).get('timeMs'))}  "
        f"({thr.get('normal') or 0:,.0f} orders/s)",
        f"  total           {ms(record.get('totalTimeMs'))}  "
        f"({thr.get('overall') or 0:,.0f} orders/s overall)",
        f"  barrier         {'held' if barrier.get('held') else 'VIOLATED'}, gap "
        f"{barrier.get('gapMs')} ms (last VIP done {barrier.get('lastVipProcessedAt')}, "
        f"first NORMAL started {barrier.get('firstNormalStartedAt')})",
        f"  peak memory     coordinator {memory.get('coordinatorMaxRssMb')} MB, workers "
        + (", ".join(f"{v} MB" for v in workers.values()) or "-"),
    ]
    return "\n".join(lines)
