"""Charts and tables of runs, shared by the notebooks and so by the HTML reports.

Each function takes the flat table of runs (:func:`table`, one row per run, the columns of
``harness runs --csv`` plus the run's parameter point) or one run record, and draws on an
Axes it is given, so a notebook lays figures out as it likes and a test can draw without a
screen.

Conventions, so that a chart reads at a glance: x axes by parameter point (labelled with
the settings that differ between the points shown, wrapped, or slanted when they would touch),
never by run id; throughput axes start at zero; every run is a dot over its point's median and
interquartile range; one y axis per chart; legends sit outside the data and the titles;
settings the same in every run are said once (:func:`fixed_settings`), not as a column;
numbers are written by :mod:`harness.numbers`.
Statistics (points, medians, comparisons) come from :mod:`harness.compare`, so the report,
`harness compare` and the tests agree.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape as html_escape
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness import compare, numbers
from harness.ranking import Ranking
from harness.record import RunRecord
from harness.runs import runs_table, summary_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Phases in the order they happen; together they make up a run's total time.
PHASES = (
    ("generationTimeMs", "generation"),
    ("enqueueVipTimeMs", "enqueue VIP"),
    ("waitVipDrainMs", "VIP drain"),
    ("enqueueNormalTimeMs", "enqueue NORMAL"),
    ("waitNormalDrainMs", "NORMAL drain"),
)
POINT = list(compare.POINT_COLUMNS)
VIP_COLOR, NORMAL_COLOR = "tab:orange", "tab:blue"
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, "fontsize": 8}
# The widest a figure of the report gets, in inches: at its 96 dpi it fits a 1,280 px page
# (the HTML scales wider ones down, and their text with them).
MAX_WIDTH_IN = 12.0


def point_figsize(points: int, height: float = 4.0) -> tuple[float, float]:
    """The size of a chart by parameter point: wider with more points, never past
    :data:`MAX_WIDTH_IN`."""
    return min(MAX_WIDTH_IN, max(7.0, 0.8 * points + 3.5)), height


# -- tables ----------------------------------------------------------------------------------

def table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as the flat table, oldest first (charts read left to right in time),
    with each run's parameter point: ``point`` (its label, naming the settings that differ
    between the points here) and ``pointIndex`` (its position, in point order)."""
    frame = pd.DataFrame(runs_table(records))
    if frame.empty:
        return frame
    frame = frame.sort_values("startedAt", kind="stable").reset_index(drop=True)
    return with_points(frame)


def with_points(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``point`` and ``pointIndex`` columns (see :func:`table`)."""
    runs = runs.copy()
    keys = [compare.Point.of(row) for row in runs.to_dict("records")]
    order = sorted(set(keys), key=compare._sort_key)
    shown = compare.varying(order)
    index = {p: i for i, p in enumerate(order)}
    runs["point"] = [p.label(shown) if shown else p.label() for p in keys]
    runs["pointIndex"] = [index[p] for p in keys]
    return runs


def _measured(runs: pd.DataFrame) -> pd.DataFrame:
    warmup = runs["warmup"].fillna(False).astype(bool) if "warmup" in runs else False
    return runs[(runs["phase"] == "DONE") & ~warmup]


def throughput_by_point(runs: pd.DataFrame) -> pd.DataFrame:
    """Per parameter point (every setting that differs between runs, and the backend):
    median, quartiles, IQR, coefficient of variation and count of orders/s over the DONE
    runs that are not warm-ups."""
    done = _measured(with_points(runs) if "point" not in runs else runs)
    rows = []
    for _, part in done.groupby("pointIndex", sort=True):
        stats = compare.Stats.of(part["overallPerSec"].dropna().astype(float))
        first = part.iloc[0]
        rows.append({**{c: first.get(c) for c in POINT}, "point": first["point"],
                     "median": stats.median, "q25": stats.q25, "q75": stats.q75,
                     "iqr": stats.iqr, "cv": stats.cv, "runs": stats.n})
    return pd.DataFrame(rows, columns=[*POINT, "point", "median", "q25", "q75", "iqr", "cv", "runs"])


# The name the report used before points were whole: kept for notebooks that call it.
throughput_by_concurrency = throughput_by_point


def ranking_table(ranking: Ranking) -> pd.DataFrame:
    """:func:`harness.ranking.rank`'s table (place, point, n, median, its interval, CV, vs
    best), as the report and sweep.ipynb show it under the headline."""
    return pd.DataFrame(ranking.table())


def verdict(text: str) -> str:
    """A verdict line (a ranking's headline, a comparison's) as HTML: bold, escaped."""
    return f'<p class="verdict"><b>{html_escape(text)}</b></p>'


def fixed_settings(records: Iterable[RunRecord]) -> list[tuple[str, str]]:
    """The settings every one of ``records`` shares (and their sweep, when one), as (name,
    value): said once above a report's tables instead of repeated in a column of each."""
    records = list(records)
    if not records:
        return []
    points = [compare.Point.of(r.row()) for r in records]
    varying = set(compare.varying(points))
    out = [(compare.SHORT.get(c, c), _cell(v)) for c, v in points[0].values
           if c not in varying and v is not None]
    sweeps = {r.param("sweep_id") for r in records}
    if len(sweeps) == 1 and (sweep := sweeps.pop()):
        out.append(("sweep", str(sweep)))
    return out


def point_columns(points: Iterable[compare.Point]) -> list[str]:
    """The settings a table of these points shows: those that differ between them (the
    rest is in :func:`fixed_settings`)."""
    return compare.varying(points)


def _settings_cells(point: compare.Point, shown: Sequence[str]) -> dict[str, str]:
    return {compare.SHORT.get(c, c): _cell(point.get(c)) for c in shown}


def points_table(summaries: Sequence[compare.PointSummary],
                 links: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per point: its settings, n, median, IQR, CV (flagged above 5 %), warm-ups
    and failures, and links to its runs' executed notebooks (``links``: run id -> href)."""
    shown = point_columns(s.point for s in summaries)
    rows = []
    for s in summaries:
        st = s.stats
        cv = numbers.percent(st.cv) + (" ⚠" if st.noisy else "")
        notebooks = " ".join(f'<a href="{links[r.run_id]}" title="{r.run_id}">{mark}{i}</a>'
                             for mark, runs in (("w", s.warmups), ("r", s.runs), ("failed ", s.failed))
                             for i, r in enumerate(runs) if links and r.run_id in links)
        rows.append({**_settings_cells(s.point, shown),
                     "runs": st.n, "median orders/s": numbers.count(st.median),
                     "IQR": numbers.count(st.iqr), "CV": cv, "warm-ups": len(s.warmups),
                     "failed": len(s.failed), "notebooks": notebooks or numbers.DASH})
    return pd.DataFrame(rows)


def runs_overview(runs: pd.DataFrame, links: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The report's table of runs, one row each, oldest first: what tells them apart (their
    point's varying settings, seed, warm-up), how they ended and their figures, written by
    :mod:`harness.numbers`; a setting shared by every run is left to :func:`fixed_settings`."""
    if runs.empty:
        return pd.DataFrame()
    rows = runs.astype(object).where(runs.notna(), None).to_dict("records")
    shown = point_columns(compare.Point.of(row) for row in rows)
    sweeps = {row.get("sweepId") for row in rows}
    warmups = any(row.get("warmup") for row in rows)
    errors = any(row.get("error") for row in rows)
    out = []
    for row in rows:
        run_id = row["runId"]
        gap, held = row.get("barrierGapMs"), row.get("barrierHeld")
        barrier = numbers.DASH if held is None else (
            f"{'held' if held else 'VIOLATED'}, gap {numbers.latency(gap)}")
        out.append({
            "run": f'<a href="{links[run_id]}">{run_id}</a>' if links and run_id in links else run_id,
            **({"sweep": row.get("sweepId") or numbers.DASH} if len(sweeps) > 1 else {}),
            "phase": row.get("phase"),
            **_settings_cells(compare.Point.of(row), shown),
            "seed": _cell(row.get("seed")),
            **({"warm-up": "yes" if row.get("warmup") else ""} if warmups else {}),
            "total": numbers.duration(row.get("totalTimeMs")),
            "orders/s": numbers.count(row.get("overallPerSec")),
            "barrier": barrier,
            "coordinator peak MB": _mb(row.get("coordinatorPeakRssMb")),
            "largest worker MB": _mb(row.get("workerPeakMb")),
            **({"error": _text(row.get("error") or "")} if errors else {}),
        })
    return pd.DataFrame(out)


def barrier_table(summaries: Sequence[compare.PointSummary]) -> pd.DataFrame:
    """Per point, the VIP-first barrier over its runs: how many held, and the gap (first
    NORMAL start minus last VIP processed; at or above zero the barrier held), smallest,
    median and largest."""
    shown = point_columns(s.point for s in summaries)
    rows = []
    for s in summaries:
        proofs = [r.barrier for r in s.runs if r.barrier is not None]
        gaps = compare.Stats.of(b.gap_ms for b in proofs if b.gap_ms is not None)
        rows.append({**_settings_cells(s.point, shown),
                     "held": f"{sum(bool(b.held) for b in proofs)} of {len(proofs)}",
                     "smallest gap": numbers.latency(gaps.values[0] if gaps.values else None),
                     "median gap": numbers.latency(gaps.median),
                     "largest gap": numbers.latency(gaps.values[-1] if gaps.values else None)})
    return pd.DataFrame(rows)


def run_summary(run: RunRecord) -> pd.DataFrame:
    """One run's summary as a two-column table: the lines `harness run` prints (see
    :func:`harness.runs.summary_rows`), under the run's id, sweep and phase."""
    head = [("run", run.run_id), ("phase", run.phase + (f" ({run.error})" if run.error else ""))]
    if run.param("sweep_id"):
        head.insert(1, ("sweep", str(run.param("sweep_id"))))
    if run.started_at:
        head.append(("started", run.started_at))
    return pd.DataFrame([(k, " ".join(v.split())) for k, v in [*head, *summary_rows(run)]],
                        columns=["", "value"])


def latency_table(run: RunRecord) -> pd.DataFrame:
    """A run's latency percentiles, milliseconds to 3 significant digits: one row per
    priority and latency; service time only when work is simulated (else it is noise)."""
    rows = []
    kinds = ["queue wait", *(["service"] if run.param("work_ms") else [])]
    if run.latency is not None:
        for priority, lat in (("VIP", run.latency.vip), ("NORMAL", run.latency.normal)):
            for kind, p in (("queue wait", lat.wait), ("service", lat.service)):
                if kind in kinds:
                    rows.append({"priority": priority, "latency": kind,
                                 "orders": numbers.count(p.count),
                                 **{k: _ms(getattr(p, f"{k}_ms"))
                                    for k in ("p50", "p95", "p99", "max", "mean")}})
    return pd.DataFrame(rows)


def latency_by_point(summaries: Sequence[compare.PointSummary]) -> pd.DataFrame:
    """Per point, the median over its runs of each run's p50 / p99 queue wait, and of
    service time when work is simulated."""
    shown = point_columns(s.point for s in summaries)
    simulated = any(r.param("work_ms") for s in summaries for r in s.runs)

    def med(runs: Sequence[RunRecord], get: Callable[[RunRecord], float | None]) -> str:
        values = [v for r in runs if r.latency is not None and (v := get(r)) is not None]
        return _ms(compare.Stats.of(values).median) if values else numbers.DASH

    rows = []
    for s in summaries:
        rows.append({
            **_settings_cells(s.point, shown),
            "VIP wait p50": med(s.runs, lambda r: r.latency.vip.wait.p50_ms if r.latency else None),
            "VIP wait p99": med(s.runs, lambda r: r.latency.vip.wait.p99_ms if r.latency else None),
            "NORMAL wait p50": med(s.runs, lambda r: r.latency.normal.wait.p50_ms if r.latency else None),
            "NORMAL wait p99": med(s.runs, lambda r: r.latency.normal.wait.p99_ms if r.latency else None),
            **({"service p99": med(s.runs, lambda r: r.row()["serviceP99Ms"]),
                "service max": med(s.runs, lambda r: max(r.latency.vip.service.max_ms or 0,
                                                         r.latency.normal.service.max_ms or 0)
                                   if r.latency else None)} if simulated else {}),
        })
    return pd.DataFrame(rows)


def memory_by_point(summaries: Sequence[compare.PointSummary]) -> pd.DataFrame:
    """Per point, the median over its runs of what the run's own processes used."""
    shown = point_columns(s.point for s in summaries)
    rows = []
    for s in summaries:
        table_ = pd.DataFrame([r.row() for r in s.runs])

        def med(col: str, table_: pd.DataFrame = table_) -> str:
            if table_.empty or col not in table_ or table_[col].isna().all():
                return numbers.DASH
            return _mb(float(table_[col].astype(float).median()))

        rows.append({**_settings_cells(s.point, shown),
                     "coordinator peak RSS (MB)": med("coordinatorPeakRssMb"),
                     "coordinator growth (MB)": med("coordinatorGrowthMb"),
                     "largest worker (MB)": med("workerPeakMb"),
                     "coordinator CPU (s)": med("coordinatorCpuS"),
                     "workers CPU (s)": med("workersCpuS")})
    return pd.DataFrame(rows)


def comparison_table(comparison: compare.Comparison) -> pd.DataFrame:
    """The comparison's matched points, formatted."""
    rows = []
    for p in comparison.points:
        rows.append({
            **_settings_cells(p.point, comparison.columns()),
            "baseline median": numbers.count(p.baseline.median),
            "baseline IQR": numbers.count(p.baseline.iqr), "baseline n": p.baseline.n,
            "median": numbers.count(p.candidate.median), "IQR": numbers.count(p.candidate.iqr),
            "n": p.candidate.n, "ratio": numbers.ratio(p.ratio),
            "p": numbers.DASH if p.p_value is None else numbers.sig(p.p_value, 2),
            "flag": p.flag.upper() if p.flag == "slower" else p.flag, "note": p.note})
    return pd.DataFrame(rows)


def environment_table(comparison: compare.Comparison) -> pd.DataFrame:
    return pd.DataFrame([{"": d.name, "baseline": _cell(d.baseline), "candidate": _cell(d.candidate),
                          "differs": "≠" if d.differs else ""} for d in comparison.environment])


def html(frame: pd.DataFrame, classes: str) -> str:
    """A table as HTML, links and marks kept, empty cells blank."""
    return frame.to_html(index=False, escape=False, na_rep="", classes=classes)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return numbers.DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return numbers.count(value)
    if isinstance(value, float):
        return numbers.count(value) if value.is_integer() else numbers.sig(value)
    return str(value)


def _text(value: str) -> str:
    """Free text in a table (an error): escaped, and marked so that it may wrap."""
    return f'<span class="text">{html_escape(value)}</span>' if value else ""


def _ms(value: float | None) -> str:
    """Milliseconds in a column that says ms: 3 significant digits."""
    return numbers.sig(value)


def _mb(value: float | None) -> str:
    return numbers.DASH if value is None else f"{value:,.1f}"


def _thousands(ax: Axes, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _point_axis(ax: Axes, labels: Sequence[str], fontsize: float = 8) -> None:
    """Points along x, one setting per line of a label (:func:`fit` slants them when
    neighbours would touch)."""
    ax.set_xticks(range(len(labels)), [label.replace(" · ", "\n") for label in labels],
                  fontsize=fontsize)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel("parameter point")


def _overlapping(ax: Axes, renderer: Any, pad: float = 2.0) -> bool:
    """Whether two upright x labels of ``ax`` touch."""
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    boxes.sort(key=lambda b: b.x0)
    return any(a.x1 + pad > b.x0 and a.y0 < b.y1 and b.y0 < a.y1
               for a, b in itertools.pairwise(boxes))


def _slant(ax: Axes, angle: float) -> None:
    texts = ax.get_xticklabels()
    ax.set_xticks(ax.get_xticks(), [t.get_text().replace("\n", ", ") for t in texts],
                  fontsize=texts[0].get_fontsize() if texts else 8, rotation=angle,
                  ha="right" if angle < 90 else "center",
                  rotation_mode="anchor" if angle < 90 else "default")


def _slanted_fit(ax: Axes, angle: float) -> bool:
    """Whether labels slanted at ``angle`` clear each other: neighbouring parallel lines
    ``slot`` apart along x are ``slot * sin(angle)`` apart across, and need a line's height."""
    ticks = list(ax.get_xticks())
    if len(ticks) < 2:
        return True
    x0, x1 = (ax.transData.transform((t, 0))[0] for t in ticks[:2])
    size = float(ax.get_xticklabels()[0].get_fontsize()) if ax.get_xticklabels() else 8.0
    line = 1.3 * size * ax.figure.dpi / 72
    return abs(x1 - x0) * math.sin(math.radians(angle)) >= line


def fit(fig: Figure) -> None:
    """Lay ``fig`` out (tight layout) so that no two x labels touch: a chart whose labels,
    one setting a line, would touch their neighbours gets them on one line slanted at 35
    degrees, or upright when even those would touch. Call it where ``tight_layout`` was."""
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    crowded = [ax for ax in fig.axes if _overlapping(ax, renderer)]
    if not crowded:
        return
    for ax in crowded:
        _slant(ax, 35)
    fig.tight_layout()
    upright = [ax for ax in crowded if not _slanted_fit(ax, 35)]
    for ax in upright:
        _slant(ax, 90)
    if upright:
        fig.tight_layout()


# -- charts of one run -----------------------------------------------------------------------

# Margins of run.ipynb's figures, inches: the y labels ("NORMAL queue wait"), the legend
# beside the axes (OUTSIDE), the title, the x labels.
RUN_MARGINS_IN = {"left": 1.8, "right": 2.0, "top": 0.4, "bottom": 0.6}


def run_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """One chart of run.ipynb: axes of ``width`` by ``height`` inches with fixed margins
    (:data:`RUN_MARGINS_IN`), laid out before drawing, so that the notebook draws it once
    (run.ipynb turns the inline backend's ``bbox_inches="tight"`` off).

    Why: a tight bounding box costs a second pass over every tick and label, 40 % of a
    figure's time; the four charts were the larger half of a sweep point's overhead
    (0.4-0.6 s of 0.9 s on a busy 2-core machine)."""
    import matplotlib.pyplot as plt

    m = RUN_MARGINS_IN
    w, h = width + m["left"] + m["right"], height + m["top"] + m["bottom"]
    fig = plt.figure(figsize=(w, h))
    ax = fig.add_axes((m["left"] / w, m["bottom"] / h, width / w, height / h))
    return fig, ax


def run_timeline(run: RunRecord, ax: Axes) -> None:
    """Generation, then the VIP window, then the NORMAL window, in seconds from the start:
    the barrier is the gap between the last two."""
    record = run.to_json()
    t0 = pd.Timestamp(record["startedAt"])

    def span(start: str | None, end: str | None) -> tuple[float, float] | None:
        if not start or not end:
            return None
        a = (pd.Timestamp(start) - t0).total_seconds()
        return a, (pd.Timestamp(end) - t0).total_seconds() - a

    rows: list[tuple[str, tuple[float, float] | None, str]] = [
        ("generation", (0.0, (record.get("generationTimeMs") or 0) / 1000), "tab:gray")]
    for key, color in (("vip", VIP_COLOR), ("normal", NORMAL_COLOR)):
        window = (record.get("processing") or {}).get(key) or {}
        rows.append((f"{key.upper()} window", span(window.get("start"), window.get("end")), color))
    for y, (_label, bar, color) in enumerate(rows):
        if bar is not None:
            ax.broken_barh([bar], (y - 0.35, 0.7), color=color)
    last_vip = (record.get("barrier") or {}).get("lastVipProcessedAt")
    if last_vip:
        x = (pd.Timestamp(last_vip) - t0).total_seconds()
        ax.axvline(x, color="black", linestyle="--", linewidth=1, label="last VIP processed")
        ax.legend(**OUTSIDE)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the run started")
    ax.set_title(f"run {run.run_id}: {run.counts.generated:,} orders")


def throughput_over_time(run: RunRecord, ax: Axes) -> None:
    """Orders processed per second in each bin (100 ms) of the run, VIP and NORMAL, from
    the stored ``processedAt``: where the run was fast, where it stalled, and the barrier
    (NORMAL starts only once VIP is done)."""
    timeline = run.timeline
    if timeline is None or not (timeline.vip or timeline.normal):
        ax.text(0.5, 0.5, "no timeline in this record", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    _stacked_rates(ax, timeline.vip, timeline.normal, timeline.bin_ms / 1000, counts=True)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    _thousands(ax)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("orders/s")
    ax.set_title(f"throughput over time ({timeline.bin_ms} ms bins)")
    ax.legend(**OUTSIDE)


def _stacked_rates(ax: Axes, vip: Sequence[int], normal: Sequence[int], width: float,
                   counts: bool = False) -> None:
    """VIP's orders/s per bin, NORMAL's stacked on top: the top edge is the total."""
    edges = [i * width for i in range(max(len(vip), len(normal)) + 1)]
    v = [c / width for c in vip] + [0.0] * (len(edges) - 1 - len(vip))
    n = [c / width for c in normal] + [0.0] * (len(edges) - 1 - len(normal))
    ax.stairs(v, edges, fill=True, color=VIP_COLOR, alpha=0.8,
              label=f"VIP ({sum(vip):,} orders)" if counts else "VIP")
    ax.stairs([a + b for a, b in zip(v, n, strict=True)], edges, baseline=v, fill=True,
              color=NORMAL_COLOR, alpha=0.8,
              label=f"NORMAL ({sum(normal):,} orders)" if counts else "NORMAL")


def latency_chart(run: RunRecord, ax: Axes) -> None:
    """p50, p95, p99 and max of queue wait and service per priority, milliseconds (log)."""
    frame = latency_table(run)
    if frame.empty:
        ax.text(0.5, 0.5, "no latency in this record", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    labels = [f"{r['priority']} {r['latency']}" for r in frame.to_dict("records")]
    marks = (("p50", "o"), ("p95", "s"), ("p99", "D"), ("max", "x"))
    lat = run.latency
    assert lat is not None
    values = [(lat.vip.wait, lat.vip.service, lat.normal.wait, lat.normal.service)[i]
              for i in range(len(labels))]
    for name, marker in marks:
        xs = [max(getattr(v, f"{name}_ms") or 0.0, 0.001) for v in values]
        ax.scatter(xs, range(len(labels)), marker=marker, label=name, zorder=3)
    ax.set_xscale("log")
    # Plain numbers (0.1, 1, 10 ms), not mathtext powers of ten, and decades only: parsing
    # those labels and making ~50 minor ticks was 0.1-0.15 s of every drawing of this chart,
    # a third of a sweep point's chart time (cProfile).
    from matplotlib.ticker import FuncFormatter, NullLocator

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_title("per-order latency")
    ax.legend(**OUTSIDE)


def phase_times(runs: pd.DataFrame, ax: Axes) -> None:
    """Each run's total split into its phases, stacked (one bar per run: run.ipynb)."""
    data = runs.set_index("runId")[[c for c, _ in PHASES]].fillna(0) / 1000
    data.columns = [label for _, label in PHASES]
    data.plot.bar(stacked=True, ax=ax, width=0.6)
    ax.set_ylabel("seconds")
    ax.set_xlabel("")
    ax.set_title("phase times")
    ax.tick_params(axis="x", labelrotation=0, labelsize=7)
    ax.legend(**OUTSIDE)


# -- charts of many runs, by parameter point -------------------------------------------------

def throughput_vs_points(runs: pd.DataFrame, ax: Axes,
                         comparison: compare.Comparison | None = None) -> None:
    """Orders/s per parameter point: every run a dot, the median a bar, the interquartile
    range a box; axis from zero. With ``comparison`` (these runs against a baseline), the
    baseline's median and IQR stand beside each point it measured too, in grey."""
    runs = runs if "point" in runs else with_points(runs)
    done = _measured(runs)
    stats = throughput_by_point(runs)
    labels = _labels(runs)
    base = _baseline_by_index(runs, comparison) if comparison is not None else {}
    shift, half = (-0.18, 0.16) if base else (0.0, 0.3)
    top = float(done["overallPerSec"].max() or 0) if len(done) else 0.0
    first = {"iqr": True, "median": True, "b-iqr": True, "b-median": True}

    def once(key: str, label: str) -> str:
        if first[key]:
            first[key] = False
            return label
        return "_nolegend_"

    for _, row in stats.iterrows():
        x = int(runs.loc[runs["point"] == row["point"], "pointIndex"].iloc[0]) + shift
        if row["q25"] is not None and row["q75"] is not None:
            ax.bar(x, row["q75"] - row["q25"], bottom=row["q25"], width=2 * half * 0.85,
                   color="tab:blue", alpha=0.25, label=once("iqr", "interquartile range"))
        ax.hlines(row["median"], x - half, x + half, color="tab:blue", linewidth=2,
                  label=once("median", "median"))
    for index, b in sorted(base.items()):
        x = index - shift
        if b.q25 is not None and b.q75 is not None:
            ax.bar(x, b.q75 - b.q25, bottom=b.q25, width=2 * half * 0.85, color="tab:gray",
                   alpha=0.3, label=once("b-iqr", "baseline IQR"))
            top = max(top, b.q75)
        if b.median is not None:
            ax.hlines(b.median, x - half, x + half, color="dimgray", linewidth=2,
                      linestyle=(0, (3, 1)), label=once("b-median", "baseline median"))
            top = max(top, b.median)
    for i, (_, part) in enumerate(done.groupby("pointIndex")):
        n = len(part)
        offsets = [(k - (n - 1) / 2) * 0.06 for k in range(n)]
        ax.scatter([int(part["pointIndex"].iloc[0]) + shift + o for o in offsets],
                   part["overallPerSec"], color="black", s=14, zorder=3,
                   label="a run" if i == 0 else "_nolegend_")
    ax.set_ylim(bottom=0, top=max(1.0, top) * 1.1)
    _point_axis(ax, labels)
    _thousands(ax)
    ax.set_ylabel("orders/s, generation to DONE")
    ax.set_title("throughput per parameter point")
    ax.legend(**OUTSIDE)


# The chart's former name.
throughput_vs_concurrency = throughput_vs_points


def _baseline_by_index(runs: pd.DataFrame, comparison: compare.Comparison) -> dict[int, compare.Stats]:
    """The baseline's statistics at each point of ``runs`` (by ``pointIndex``) it measured:
    points matched as the comparison matched them (without the settings that changed)."""
    changed = [d.name for d in comparison.changed]
    matched = {p.point: p.baseline for p in comparison.points}
    out = {}
    for row in runs.drop_duplicates("pointIndex").to_dict("records"):
        key = compare.Point.of(row).without(changed)
        if key in matched:
            out[int(row["pointIndex"])] = matched[key]
    return out


def _labels(runs: pd.DataFrame) -> list[str]:
    by_index = runs.drop_duplicates("pointIndex").sort_values("pointIndex")
    return list(by_index["point"])


def phase_breakdown(runs: pd.DataFrame, ax: Axes) -> None:
    """Each point's median phase times, stacked: where a point's time goes."""
    runs = runs if "point" in runs else with_points(runs)
    done = _measured(runs)
    labels = _labels(runs)
    data = (done.groupby("pointIndex")[[c for c, _ in PHASES]].median().reindex(range(len(labels)))
            .fillna(0) / 1000)
    bottom = [0.0] * len(labels)
    for column, label in PHASES:
        values = list(data[column])
        ax.bar(range(len(labels)), values, bottom=bottom, width=0.6, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    _point_axis(ax, labels)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("seconds (median of the point's runs)")
    ax.set_title("phase times per parameter point")
    ax.legend(**OUTSIDE)


def windows_by_point(runs: pd.DataFrame, ax: Axes) -> None:
    """Per point, the median VIP and NORMAL processing windows, in seconds (one axis: the
    barrier gap, in milliseconds, is :func:`barrier_table`'s)."""
    runs = runs if "point" in runs else with_points(runs)
    done = _measured(runs)
    labels = _labels(runs)
    med = (done.groupby("pointIndex")[["vipTimeMs", "normalTimeMs"]].median()
           .reindex(range(len(labels))).fillna(0) / 1000)
    xs = list(range(len(labels)))
    ax.bar([x - 0.17 for x in xs], med["vipTimeMs"], width=0.34, color=VIP_COLOR, label="VIP window")
    ax.bar([x + 0.17 for x in xs], med["normalTimeMs"], width=0.34, color=NORMAL_COLOR,
           label="NORMAL window")
    _point_axis(ax, labels)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("seconds (median of the point's runs)")
    ax.set_title("VIP and NORMAL processing windows per parameter point")
    ax.legend(**OUTSIDE)


# The chart's former name (it drew the barrier gap on a second axis).
windows_and_gap = windows_by_point


def _closest(runs: Sequence[RunRecord], median: float) -> RunRecord:
    """The run whose throughput is nearest the point's median: the point's typical run."""
    return min(runs, key=lambda r: abs((compare.metric_of(r) or 0.0) - median))


def timelines_by_point(summaries: Sequence[compare.PointSummary], fig: Figure) -> None:
    """Throughput over time of each point's median run, one small chart per point, on one
    time scale so points compare at a glance."""
    chosen = []
    for s in summaries:
        runs = [r for r in s.runs if r.timeline is not None and (r.timeline.vip or r.timeline.normal)]
        median = s.stats.median
        if runs and median is not None:
            chosen.append((s, _closest(runs, median)))
    if not chosen:
        return
    shown = compare.varying(s.point for s, _ in chosen)
    cols = min(3, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    top = 0.0
    for ax, (s, run) in zip(axes.flat, chosen, strict=False):
        assert run.timeline is not None
        width = run.timeline.bin_ms / 1000
        _stacked_rates(ax, run.timeline.vip, run.timeline.normal, width)
        top = max([top, *((v + n) / width for v, n in zip(run.timeline.vip, run.timeline.normal,
                                                          strict=False))])
        title = s.point.label(shown) if shown else "all runs"
        ax.set_title(textwrap.fill(title, 40), fontsize=8)
        _thousands(ax)
    axes.flat[0].set_ylim(0, top * 1.05 or 1.0)  # shared: one scale, from zero, nothing cut
    for ax in axes.flat[len(chosen):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("orders/s", fontsize=8)
    if fig.get_layout_engine() is None:  # "outside" legends need it
        fig.set_layout_engine("constrained")
    handles, names = axes.flat[0].get_legend_handles_labels()
    # Below the charts, in a band of its own: over them it covered a chart's title.
    fig.legend(handles, names, loc="outside lower center", ncols=len(names), frameon=False,
               fontsize=8)
    fig.suptitle("throughput over time, the median run of each point (100 ms bins)", fontsize=10)
