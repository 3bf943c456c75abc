"""What a run costs around itself: start-up, clearing the last run, workers, a sweep's kernels.

A small run or a sweep point is mostly fixed costs, so they are measured on their own, by
`harness bench` ("fixed costs"):

- ``harness run`` fixed cost: wall time of `harness run -n 1000` as a fresh process, right
  after a 100,000-order run (so clearing the previous orders counts), less the run's own
  recorded total;
- sweep point overhead: each point's wall time in a sweep of 2,000-order points (kernel,
  notebook, charts, saving), less the run's recorded total.

Medians over several tries; every run is a real, recorded run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from harness.config import Settings
from harness.errors import BenchFailed, HarnessError
from harness.history import get_run
from harness.launch import run_in_child
from harness.record import RunRecord

RUN_TRIES = 5
PRIOR = 100_000  # orders of the run before each timed one: clearing them counts
SWEEP_GRID = {"quantity": [2_000], "chunk_size": [500, 1_000], "concurrency": [1, 2]}
SWEEP_REPEATS = 2
TARGET_RUN_FIXED_S = 0.5
TARGET_POINT_OVERHEAD_S = 0.8

Report = Callable[[str], None]


def _child_run(settings: Settings) -> tuple[RunRecord, float]:
    t = time.perf_counter()
    try:
        record = RunRecord.from_json(run_in_child(settings))
    except HarnessError as exc:
        raise BenchFailed(f"harness run -n {settings.quantity} failed: {exc}") from None
    wall = time.perf_counter() - t
    if not record.is_done:
        raise BenchFailed(f"harness run -n {settings.quantity} ended {record.phase}: {record.error}")
    return record, wall


def run_fixed_cost(settings: Settings, prior: int = PRIOR, tries: int = RUN_TRIES,
                   report: Report = lambda line: None) -> dict[str, Any]:
    """``tries`` times: a ``prior``-order run, then `harness run -n 1000` timed from outside."""
    costs = []
    for k in range(tries):
        report(f"fixed cost of harness run: try {k + 1}/{tries} (a {prior:,}-order run first) ...")
        _child_run(settings.replace(quantity=prior, max_orders=max(prior, settings.max_orders)))
        record, wall = _child_run(settings.replace(quantity=1_000))
        costs.append(wall - (record.total_time_ms or 0) / 1000)
    return {"tries": tries, "afterOrders": prior, "medianS": round(statistics.median(costs), 3),
            "minS": round(min(costs), 3), "maxS": round(max(costs), 3)}


def sweep_point_overhead(settings: Settings, repeats: int = SWEEP_REPEATS,
                         report: Report = lambda line: None) -> dict[str, Any]:
    """A sweep of 2,000-order points; each point's wall time less its run's total."""
    from harness.report import sweep

    manifest = sweep(settings, SWEEP_GRID, repeats,
                     sweep_id=f"bench-fixed-{time.strftime('%Y%m%dT%H%M%S')}", with_report=False,
                     report=lambda line: report(f"sweep overhead: {line}"))
    overheads = []
    for point in manifest.points:
        record = get_run(settings, point.run_id)
        if point.status != "ok" or record is None or point.wall_s is None:
            raise BenchFailed(f"sweep point {point.notebook} failed: {point.error}")
        overheads.append(point.wall_s - (record.total_time_ms or 0) / 1000)
    return {"points": len(overheads), "medianS": round(statistics.median(overheads), 3),
            "firstS": round(overheads[0], 3), "maxS": round(max(overheads), 3),
            "sweepWallS": manifest.wall_time_s, "sweepId": manifest.sweep_id}


def fixed_costs(settings: Settings, n: int, report: Report = lambda line: None) -> dict[str, Any]:
    """Both measures; a benchmark of fewer than 100,000 orders (CI's) does fewer, smaller
    tries so that it stays quick: its figures then say so (``afterOrders``, ``tries``)."""
    small = n < PRIOR
    return {"run": run_fixed_cost(settings, prior=min(PRIOR, n), tries=2 if small else RUN_TRIES,
                                  report=report),
            "sweepPoint": sweep_point_overhead(settings, repeats=1 if small else SWEEP_REPEATS,
                                               report=report)}
