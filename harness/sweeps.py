"""Sweeps you can find: the sweeps in the store, listed (`harness sweeps`), and the nearest
existing ids named when one asked for has no runs.

A sweep is every run tagged with its id (``HARNESS_SWEEP_ID``; `harness sweep` sets it per
run). Its best point is :func:`harness.ranking.rank`'s, so `harness sweeps`, `harness sweep`'s
closing table and the report agree.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness import history, numbers
from harness.config import Settings
from harness.errors import HarnessError
from harness.record import RunRecord

# How many ids an error names: the nearest, else the newest.
NAMED = 5


@dataclass(frozen=True)
class SweepSummary:
    """One sweep as `harness sweeps` lists it."""

    sweep_id: str
    started_at: str | None  # its first run's start
    points: int
    runs: int  # every run recorded, warm-ups and failed ones included
    failed: int
    best: str  # the best point's label and median, or why there is none

    def to_json(self) -> dict[str, Any]:
        return {"sweepId": self.sweep_id, "startedAt": self.started_at, "points": self.points,
                "runs": self.runs, "failed": self.failed, "best": self.best}


def by_sweep(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Runs grouped by sweep id (runs of no sweep left out), each oldest first."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        if sweep_id := record.param("sweep_id"):
            groups.setdefault(str(sweep_id), []).append(record)
    for runs in groups.values():
        runs.sort(key=lambda r: r.started_at or "")
    return groups


def summarize(records: Iterable[RunRecord]) -> list[SweepSummary]:
    """Every sweep of ``records``, newest first (by its first run's start)."""
    from harness.ranking import rank

    out = []
    for sweep_id, runs in by_sweep(records).items():
        ranking = rank(runs)
        best = ranking.best
        if best is None:
            text = "no measured run"
        else:
            label = best.point.label(ranking.columns) if ranking.columns else "its one point"
            text = f"{label}: {numbers.rate(best.stats.median)}"
        out.append(SweepSummary(sweep_id, runs[0].started_at, len(ranking.points), len(runs),
                                sum(not r.is_done for r in runs), text))
    return sorted(out, key=lambda s: s.started_at or "", reverse=True)


def format_table(sweeps: Sequence[SweepSummary]) -> str:
    """The sweeps as `harness sweeps` prints them: id, when, points, runs, best point."""
    if not sweeps:
        return "no sweeps recorded yet: `harness sweep` first"
    header = ["sweep", "started (UTC)", "points", "runs", "failed", "best point (median)"]
    rows = [[s.sweep_id, _when(s.started_at), numbers.count(s.points), numbers.count(s.runs),
             numbers.count(s.failed), s.best] for s in sweeps]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3, 4}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join(line(row) for row in [header, *rows])


def _when(started_at: str | None) -> str:
    """``2026-12-05 10:18:53`` of an ISO time (UTC, as records keep it)."""
    if not started_at:
        return numbers.DASH
    return started_at[:19].replace("T", " ")


def nearest(wanted: str, records: Sequence[RunRecord]) -> str:
    """What to say after "no runs are recorded for sweep X": the existing sweep ids nearest
    to ``wanted`` (difflib), else the newest ones; that ``wanted`` is a run's id, when it is."""
    runs_of = by_sweep(records)
    if not runs_of:
        return "no sweep is recorded yet (`harness runs` lists the runs)"
    as_run = next((r for r in records if r.run_id == wanted), None)
    if as_run is not None:
        sweep = as_run.param("sweep_id")
        return (f"{wanted!r} is a run" + (f", of sweep {sweep!r}" if sweep else ", in no sweep")
                + " (`harness sweeps` lists the sweeps)")
    close = difflib.get_close_matches(wanted, list(runs_of), n=NAMED, cutoff=0.6)
    if close:
        return f"nearest: {', '.join(close)}"
    newest = [s for s, _ in sorted(runs_of.items(), key=lambda kv: kv[1][-1].started_at or "",
                                   reverse=True)][:NAMED]
    more = f" and {len(runs_of) - len(newest)} more" if len(runs_of) > len(newest) else ""
    return f"sweeps recorded: {', '.join(newest)}{more} (`harness sweeps` lists them)"


def point_rate(settings: Settings, run_id: str) -> str | None:
    """Run ``run_id``'s orders/s, generation to DONE, as its record in ``settings``' store
    says (`harness sweep`'s line per point); None without a DONE record or a store."""
    try:
        record = history.get_run(settings, run_id)
    except HarnessError:  # the point's line goes on without it
        return None
    if record is None or not record.is_done or record.throughput is None:
        return None
    return numbers.rate(record.throughput.overall, record.total_time_ms)
