"""The run record: what ``process_runs`` keeps of each run, typed, versioned, and built one way.

A record is JSON in the store (camelCase keys, the original service's names:
``generationTimeMs``, ``processing.vip.timeMs`` ...) and dataclasses in Python. The codec at
:mod:`harness.codec` maps one to the other by field name (``generation_time_ms`` ↔
``generationTimeMs``), so a new field is one line here and nowhere else; keys a reader does
not know are kept as they were (``extra``), so an older harness never drops a newer one's
figures.

Versions: 1 is what the harness wrote before records were typed (no ``schemaVersion`` key;
the same keys); 2 adds ``schemaVersion``. :func:`RunRecord.from_json` reads both.

Every way a run ends — DONE, ERROR, ABORTED by a cancel, a signal or a takeover, a sweep
point that failed before its run could record itself — goes through :func:`finish`, which
computes the figures from what the store holds and refuses to call a run DONE unless the
store agrees.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from harness.codec import camel, from_json, to_json
from harness.config import RUN_SHAPE
from harness.datatypes import Phase, Tally, Window
from harness.orders import NORMAL, VIP

SCHEMA_VERSION = 2


def new_run_id() -> str:
    """A run id: UTC start time (so ids sort by time) and 6 random hex digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def iso(seconds: float | None) -> str | None:
    """Unix seconds as an ISO-8601 UTC string with milliseconds."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# -- the parts -------------------------------------------------------------------------------

@dataclass
class WindowFigures:
    """One priority's processing window, as status documents and records show it."""

    start: str | None = None
    end: str | None = None
    time_ms: float | None = None
    count: int = 0
    per_sec: float | None = None

    @classmethod
    def of(cls, count: int, start: float | None, end: float | None) -> WindowFigures:
        time_ms = round((end - start) * 1000, 3) if start is not None and end is not None else None
        per_sec = round(count / (time_ms / 1000), 1) if time_ms else None
        return cls(iso(start), iso(end), time_ms, count, per_sec)

    @classmethod
    def stored(cls, window: Window | None) -> WindowFigures:
        """The figures of a window read from the stored orders (empty: nothing processed)."""
        if window is None:
            return cls.of(0, None, None)
        return cls.of(window.count, window.first_started, window.last_processed)


@dataclass
class Processing:
    vip: WindowFigures = field(default_factory=WindowFigures)
    normal: WindowFigures = field(default_factory=WindowFigures)


@dataclass
class Throughput:
    vip: float | None = None
    normal: float | None = None
    overall: float | None = None


@dataclass
class BarrierProof:
    """Did every VIP order finish before any NORMAL order started? From stored timestamps:
    ``max(VIP processedAt) <= min(NORMAL startedAt)``. With no VIP or no NORMAL orders
    processed there is nothing to order, and it holds trivially."""

    last_vip_processed_at: str | None = None
    first_normal_started_at: str | None = None
    first_normal_processed_at: str | None = None
    gap_ms: float | None = None
    held: bool = True

    @classmethod
    def of(cls, windows: Mapping[str, Window]) -> BarrierProof:
        vip, normal = windows.get(VIP), windows.get(NORMAL)
        last_vip = vip.last_processed if vip else None
        first_start = normal.first_started if normal else None
        proof = cls(iso(last_vip), iso(first_start),
                    iso(normal.first_processed if normal else None))
        if last_vip is not None and first_start is not None:
            proof.gap_ms = round((first_start - last_vip) * 1000, 3)
            proof.held = first_start >= last_vip
        return proof


@dataclass
class JobCounts:
    vip: int = 0
    normal: int = 0


@dataclass
class Counts:
    generated: int = 0
    vip: int = 0
    normal: int = 0
    jobs: JobCounts = field(default_factory=JobCounts)
    processed: int | None = None


@dataclass
class Breakdown:
    """Where generation time went: making orders, and inserting them."""

    generate_ms: float | None = None
    insert_ms: float | None = None


@dataclass
class ProcessMemory:
    """One process of a run, as the sampler saw it: ``role`` coordinator, pool (RQ's
    WorkerPool, which only watches its workers), worker, or generator (the process that
    makes and stores every other chunk: :mod:`harness.producer`)."""

    role: str
    pid: int
    peak_rss_mb: float | None = None
    peak_uss_mb: float | None = None
    cpu_s: float | None = None


@dataclass
class Memory:
    """What a run's own processes used, sampled with psutil (see :mod:`harness.sampling`).

    Records before sampling (no ``method``) kept only ``coordinatorMaxRssMb`` and
    ``workerMaxRssMb``: ``ru_maxrss``, which a forked worker inherits from whoever launched
    the run (35 MB per worker from the CLI, 109-131 MB from a notebook). Sampled records
    leave those two empty; read :attr:`coordinator_mb` and :attr:`worker_peak_mb`, which
    fall back to them for old records.

    Figures that do not depend on the launcher: ``worker_peak_uss_mb`` (memory private to a
    worker; pages shared with the process it was forked from do not count) and
    ``coordinator_growth_mb`` (peak RSS during the run minus RSS when it started).
    ``coordinator_peak_rss_mb`` is the whole coordinator process: from a notebook, the
    kernel with pandas and matplotlib loaded.
    """

    coordinator_max_rss_mb: float | None = None
    worker_max_rss_mb: dict[str, float] = field(default_factory=dict)
    method: str | None = None
    interval_ms: float | None = None
    samples: int = 0
    sampler_cpu_ms: float | None = None
    coordinator_start_rss_mb: float | None = None
    coordinator_peak_rss_mb: float | None = None
    coordinator_growth_mb: float | None = None
    coordinator_cpu_s: float | None = None
    worker_peak_uss_mb: float | None = None
    worker_peak_rss_mb: float | None = None
    workers_cpu_s: float | None = None
    workers: int = 0
    processes: list[ProcessMemory] = field(default_factory=list)

    @property
    def coordinator_mb(self) -> float | None:
        """The coordinator's peak RSS: sampled, or an old record's ``ru_maxrss``."""
        if self.method is not None:
            return self.coordinator_peak_rss_mb
        return self.coordinator_max_rss_mb

    @property
    def worker_peak_mb(self) -> float | None:
        """The largest worker: peak USS when sampled, an old record's ``ru_maxrss`` else."""
        if self.method is not None:
            return self.worker_peak_uss_mb
        return max(self.worker_max_rss_mb.values()) if self.worker_max_rss_mb else None


@dataclass
class Timeline:
    """Orders processed per bin of ``bin_ms`` from the run's start (``since``), per
    priority: ``vip[i]`` orders were processed in [since + i*bin, since + (i+1)*bin).
    Counted by the store in one query at the end of the run (``query_ms``)."""

    bin_ms: int = 100
    since: str | None = None
    vip: list[int] = field(default_factory=list)
    normal: list[int] = field(default_factory=list)
    query_ms: float | None = None


@dataclass
class Percentiles:
    """Nearest-rank percentiles of one latency over ``count`` orders, in milliseconds."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None


@dataclass
class OrderLatency:
    """Queue wait (createdAt → startedAt) and service (startedAt → processedAt) of one
    priority's processed orders. ``createdAt`` is per chunk, so the wait includes the rest
    of the order's chunk being generated and stored."""

    wait: Percentiles = field(default_factory=Percentiles)
    service: Percentiles = field(default_factory=Percentiles)


@dataclass
class Latency:
    """Per-order latency percentiles per priority, computed in the store at the end of a
    run (``query_ms`` for both queries)."""

    vip: OrderLatency = field(default_factory=OrderLatency)
    normal: OrderLatency = field(default_factory=OrderLatency)
    query_ms: float | None = None


@dataclass
class Overhead:
    """What the command that ran the run cost around the pipeline's own clock.

    ``total_time_ms`` starts when setup ends and stops when the last order is done; a user
    waits for more: the process starting and connecting, setup, and after the last order the
    workers stopping and the end-of-run queries. Kept because a stall there hid once: with
    redis-py 8.2.0 every worker pool waited 30 s to stop, ``harness run -n 1000`` took 34 s of
    wall time, and every figure the run printed still said 0.08 s.

    ``since`` says where ``wall_ms`` starts: ``process`` (the command's own process, as
    ``harness run``), or ``call`` (the library call, as from a notebook kernel).
    ``wall_ms`` = ``before_ms`` + ``run_ms`` + ``after_ms``; the record is saved at its end.
    """

    since: str = "call"
    wall_ms: float | None = None
    before_ms: float | None = None  # start -> the pipeline's clock starts (includes setup)
    run_ms: float | None = None  # this stretch of the pipeline (a resumed run's last one)
    after_ms: float | None = None  # the last order done -> the record saved
    pool_stop_ms: float | None = None  # part of after_ms: the worker pool stopping


@dataclass
class CancelInfo:
    """What a cancel asked for and what it did. ``by_coordinator`` False: the run's
    coordinator was gone and the canceller recorded the run itself."""

    run_id: str | None = None
    purge: bool = True
    remove_pending: bool = True
    reset_metrics: bool = False
    requested_at: str | None = None
    phase: str | None = None
    last_job_stopped_ms: float | None = None
    still_running: int = 0
    removed_pending: int = 0
    remove_pending_ms: float | None = None
    by_coordinator: bool | None = None


@dataclass
class Resume:
    """One resume of a run: where it stopped, what the store held, what was redone."""

    at: str | None = None
    epoch: int = 0
    from_phase: str | None = None
    from_error: str | None = None
    last_checkpoint_at: str | None = None
    stored: int = 0
    truncated: int = 0
    processed: int = 0
    pending: JobCounts = field(default_factory=JobCounts)


@dataclass
class RedisInfo:
    version: str | None = None
    url: str | None = None


@dataclass
class Environment:
    """Where and with what a run ran (connection strings redacted); see
    :func:`harness.runs.environment`."""

    python: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    redis: RedisInfo = field(default_factory=RedisInfo)
    store: dict[str, Any] = field(default_factory=dict)
    cpu_count: int | None = None
    host: str | None = None
    platform: str | None = None
    git_revision: str | None = None
    # Added with the comparison of results across machines (asv's machine.json):
    cpu_model: str | None = None
    cpu_cores: int | None = None  # physical; cpu_count is logical
    memory_total_mb: float | None = None
    os: str | None = None
    machine: str | None = None
    python_implementation: str | None = None
    git_dirty: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- the record ------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One run in ``process_runs``. ``parameters`` are the run's settings as
    :meth:`Settings.public_dict` gives them (redacted), with the seed it used."""

    run_id: str
    phase: str = Phase.GENERATING.value
    parameters: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    started_at: str | None = None
    checkpoint_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    stopped_in_phase: str | None = None
    generation_time_ms: float | None = None
    enqueue_vip_time_ms: float | None = None
    enqueue_normal_time_ms: float | None = None
    wait_vip_drain_ms: float | None = None
    wait_normal_drain_ms: float | None = None
    setup_ms: float | None = None
    breakdown: Breakdown = field(default_factory=Breakdown)
    counts: Counts = field(default_factory=Counts)
    processing: Processing | None = None
    total_time_ms: float | None = None
    throughput: Throughput | None = None
    barrier: BarrierProof | None = None
    memory: Memory | None = None
    timeline: Timeline | None = None
    latency: Latency | None = None
    environment: Environment | None = None
    resumes: list[Resume] = field(default_factory=list)
    cancel: CancelInfo | None = None
    overhead: Overhead | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_done(self) -> bool:
        return self.phase == Phase.DONE.value

    def param(self, name: str) -> Any:
        return self.parameters.get(name)

    @property
    def backend(self) -> str | None:
        return self.environment.store.get("backend") if self.environment else None

    def to_json(self) -> dict[str, Any]:
        """The stored form. A record read from an older version is written back as this
        version (its keys are a subset of this version's)."""
        out = to_json(self)
        out["schemaVersion"] = max(self.schema_version, SCHEMA_VERSION)
        return dict(out)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """Read a stored record of any version: 1 (no ``schemaVersion``) has the same keys
        as 2; keys of a newer version are kept in ``extra``."""
        record = from_json(cls, data)
        record.schema_version = int(data.get("schemaVersion") or 1)
        return record

    def row(self) -> dict[str, Any]:
        """One flat row: the columns of ``harness runs --csv`` and of the reports' tables."""
        return {name: get(self) for name, get in COLUMNS}


def _windows(record: RunRecord) -> Processing:
    return record.processing or Processing()


def _service_p99(record: RunRecord) -> float | None:
    """The larger of the two priorities' service p99 (both are the same work)."""
    if record.latency is None:
        return None
    values = [v for v in (record.latency.vip.service.p99_ms, record.latency.normal.service.p99_ms)
              if v is not None]
    return max(values) if values else None


def _setting_column(name: str) -> tuple[str, Callable[[RunRecord], Any]]:
    """The column of run setting ``name``: its camelCase name, read from the parameters."""
    if name == "warmup":  # records older than warm-ups have none: not one
        return camel(name), lambda r: bool(r.param("warmup"))
    return camel(name), lambda r: r.param(name)


# One column per run setting (config.RUN_SHAPE), in its order: a setting added there has its
# column here, and so its place in a parameter point (harness.compare.Point), with no list
# to keep by hand. (A missing one read None for every run: runs that differed in it were
# pooled as one point.)
SETTING_COLUMNS = tuple(_setting_column(name) for name in RUN_SHAPE if name != "sweep_id")

# Columns of `harness runs` and the reports, in order: (column, how to read it).
COLUMNS: tuple[tuple[str, Callable[[RunRecord], Any]], ...] = (
    ("runId", lambda r: r.run_id),
    _setting_column("sweep_id"),
    ("startedAt", lambda r: r.started_at),
    ("phase", lambda r: r.phase),
    ("backend", lambda r: r.backend),
    *SETTING_COLUMNS,
    ("totalTimeMs", lambda r: r.total_time_ms),
    ("generationTimeMs", lambda r: r.generation_time_ms),
    ("enqueueVipTimeMs", lambda r: r.enqueue_vip_time_ms),
    ("enqueueNormalTimeMs", lambda r: r.enqueue_normal_time_ms),
    ("waitVipDrainMs", lambda r: r.wait_vip_drain_ms),
    ("waitNormalDrainMs", lambda r: r.wait_normal_drain_ms),
    ("setupMs", lambda r: r.setup_ms),
    ("vipTimeMs", lambda r: _windows(r).vip.time_ms),
    ("normalTimeMs", lambda r: _windows(r).normal.time_ms),
    ("overallPerSec", lambda r: r.throughput.overall if r.throughput else None),
    ("barrierHeld", lambda r: r.barrier.held if r.barrier else None),
    ("barrierGapMs", lambda r: r.barrier.gap_ms if r.barrier else None),
    ("coordinatorPeakRssMb", lambda r: r.memory.coordinator_mb if r.memory else None),
    ("coordinatorGrowthMb", lambda r: r.memory.coordinator_growth_mb if r.memory else None),
    ("workerPeakMb", lambda r: r.memory.worker_peak_mb if r.memory else None),
    ("coordinatorCpuS", lambda r: r.memory.coordinator_cpu_s if r.memory else None),
    ("workersCpuS", lambda r: r.memory.workers_cpu_s if r.memory else None),
    ("vipWaitP99Ms", lambda r: r.latency.vip.wait.p99_ms if r.latency else None),
    ("normalWaitP99Ms", lambda r: r.latency.normal.wait.p99_ms if r.latency else None),
    ("serviceP99Ms", lambda r: _service_p99(r)),
    ("resumes", lambda r: len(r.resumes)),  # its times then include downtime
    ("error", lambda r: r.error),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
# The columns the plain `harness runs` table shows; --csv gives all, --json whole records.
BRIEF_COLUMNS = (
    "runId", "sweepId", "phase", "backend", "quantity", "ordersPerJob", "concurrency", "totalTimeMs",
    "overallPerSec", "barrierHeld", "resumes", "error",
)


# -- how a run ends --------------------------------------------------------------------------

@dataclass(frozen=True)
class Measured:
    """What the store and the run's processes say at the end, for :func:`finish`."""

    windows: Mapping[str, Window] | None  # None: the store could not be read
    total_s: float | None = None
    memory: Memory | None = None
    tally: Tally | None = None  # orders stored per priority: counts of a run that stopped early
    timeline: Timeline | None = None
    latency: Latency | None = None


def finish(
    record: RunRecord, phase: Phase, error: str | None, measured: Measured,
    cancel: CancelInfo | None = None, now: float | None = None,
) -> RunRecord:
    """End ``record`` as ``phase`` (DONE, ERROR or ABORTED), from what was ``measured``.

    The one place a run's end is written, whoever writes it: the coordinator, a canceller
    or the next run taking over from a dead coordinator, or a sweep whose point failed
    before its run could record itself. A DONE run whose stored counts differ from what it
    generated, or whose barrier proof fails, ends ERROR instead. A run that stopped early
    takes its generated counts from the store (``measured.tally``): an order generated but
    not yet enqueued still counts.
    """
    now = time.time() if now is None else now
    if measured.windows is not None:
        windows = measured.windows
        vip, normal = WindowFigures.stored(windows.get(VIP)), WindowFigures.stored(windows.get(NORMAL))
        record.processing = Processing(vip, normal)
        record.counts.processed = vip.count + normal.count
        record.barrier = BarrierProof.of(windows)
        if phase is Phase.DONE and (vip.count, normal.count) != (record.counts.vip, record.counts.normal):
            phase, error = Phase.ERROR, (
                f"store holds {vip.count}/{record.counts.vip} VIP and "
                f"{normal.count}/{record.counts.normal} NORMAL orders processed")
        if phase is Phase.DONE and not record.barrier.held:
            phase, error = Phase.ERROR, f"VIP-first barrier violated: gap {record.barrier.gap_ms} ms"
    elif phase is Phase.DONE:
        phase, error = Phase.ERROR, "the store could not be read to prove the run"
    if measured.tally is not None and phase is not Phase.DONE:
        tally = measured.tally
        record.counts.generated = tally.count()
        record.counts.vip, record.counts.normal = tally.count(VIP), tally.count(NORMAL)
    if measured.total_s is not None:
        record.total_time_ms = ms(measured.total_s)
        processed = record.counts.processed or 0
        record.throughput = Throughput(
            vip=record.processing.vip.per_sec if record.processing else None,
            normal=record.processing.normal.per_sec if record.processing else None,
            # From the total as stored (rounded to the microsecond), as the live status
            # computes it: the last progress line and the summary print the same rate.
            overall=round(processed / (record.total_time_ms / 1000), 1) if record.total_time_ms else None)
    if measured.memory is not None:
        record.memory = measured.memory
    if measured.timeline is not None:
        record.timeline = measured.timeline
    if measured.latency is not None:
        record.latency = measured.latency
    if cancel is not None:
        record.cancel = cancel
    if phase is not Phase.DONE:
        record.stopped_in_phase = record.stopped_in_phase or record.phase
    else:
        record.stopped_in_phase = None
    record.phase, record.error, record.finished_at = phase.value, error, iso(now)
    return record


def failed_point(run_id: str, parameters: dict[str, Any], error: str) -> RunRecord:
    """The record of a sweep point that failed before its run could record itself, so the
    report lists it."""
    record = RunRecord(run_id=run_id, parameters=parameters, started_at=iso(time.time()))
    return finish(record, Phase.ERROR, error, Measured(windows=None))
