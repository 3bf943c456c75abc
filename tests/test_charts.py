"""The report's tables and charts computed from runs: medians and quartiles per parameter
point, every run drawn, axes by point, throughput from zero, legends off the data."""

from __future__ import annotations

import itertools
import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from test_compare import record

from harness import charts, compare
from harness.record import Latency, OrderLatency, Percentiles, RunRecord, Timeline


def _runs(rates: dict[tuple[int, int], list[float]], phase: str = "DONE") -> pd.DataFrame:
    rows = []
    for (chunk, workers), values in rates.items():
        for i, rate in enumerate(values):
            rows.append({"runId": f"r{chunk}-{workers}-{i}-{phase}", "phase": phase, "quantity": 1000,
                         "chunkSize": chunk, "ordersPerJob": 100, "concurrency": workers,
                         "backend": "sqlite", "warmup": False, "startedAt": f"2026-11-30T10:00:{i:02d}",
                         "overallPerSec": rate, "vipTimeMs": 10.0, "normalTimeMs": 20.0,
                         "barrierGapMs": 1.5, **{c: 5.0 for c, _ in charts.PHASES}})
    return pd.DataFrame(rows)


def test_throughput_median_and_quartiles_over_repeats_ignore_failed_runs_and_warmups() -> None:
    warm = _runs({(500, 1): [999_999]})
    warm["warmup"] = True
    runs = pd.concat([_runs({(500, 1): [10, 20, 30, 40], (500, 2): [50]}),
                      _runs({(500, 1): [1_000_000]}, phase="ERROR"), warm])
    stats = charts.throughput_by_point(runs).set_index(["chunkSize", "concurrency"])
    assert stats.loc[(500, 1), "median"] == 25 and stats.loc[(500, 1), "runs"] == 4
    assert stats.loc[(500, 1), "q25"] == 17.5 and stats.loc[(500, 1), "q75"] == 32.5
    assert stats.loc[(500, 1), "cv"] == pytest.approx(0.5164, abs=1e-4)
    assert stats.loc[(500, 2), "median"] == 50 and stats.loc[(500, 2), "runs"] == 1


def _axis_labels(ax: plt.Axes) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_charts_are_by_point_from_zero_with_every_run_and_legends_outside() -> None:
    runs = charts.with_points(_runs({(500, 1): [10, 20], (1000, 2): [30, 35, 40]}))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    charts.throughput_vs_points(runs, axes[0])
    charts.phase_breakdown(runs, axes[1])
    charts.windows_by_point(runs, axes[2])
    fig.canvas.draw()
    assert len(fig.axes) == 3  # one y axis per chart: the barrier gap is a table of its own
    # x by point (2 points, labelled by what differs), not by the 5 run ids
    for ax in axes:
        assert _axis_labels(ax) == ["chunk 500\nworkers 1", "chunk 1,000\nworkers 2"]
    # every run is a dot; the throughput axis starts at zero
    dots = [c for c in axes[0].collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in dots) == 5
    assert axes[0].get_ylim()[0] == 0
    assert len(axes[1].patches) == 2 * len(charts.PHASES)  # a stacked bar per point
    # every legend lies right of its axes: it covers no data
    for ax in axes:
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
    plt.close(fig)


def _run_with_inside() -> RunRecord:
    p = Percentiles(count=10, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, max_ms=4.0, mean_ms=1.5)
    return RunRecord(run_id="r1", phase="DONE", started_at="2026-11-30T10:00:00.000+00:00",
                     timeline=Timeline(bin_ms=100, vip=[5, 5, 0], normal=[0, 3, 7]),
                     latency=Latency(vip=OrderLatency(p, p), normal=OrderLatency(p, p)))


def test_a_runs_timeline_stacks_normal_on_vip_per_bin_and_its_latency_table() -> None:
    run = _run_with_inside()
    fig, ax = plt.subplots()
    charts.throughput_over_time(run, ax)
    vip, normal = ax.patches  # two filled step areas
    assert ax.get_ylim()[0] == 0
    # orders/s per 100 ms bin: VIP 50, 50, 0; NORMAL on top, 50, 80, 70
    assert normal.get_path().vertices[:, 1].max() == pytest.approx(80.0)
    assert vip.get_path().vertices[:, 1].max() == pytest.approx(50.0)
    plt.close(fig)
    table = charts.latency_table(run)
    # 3 significant digits; no work simulated: no service time (it would be the clock's noise)
    assert list(table["p99"]) == ["3"] * 2 and list(table["latency"]) == ["queue wait"] * 2
    run.parameters["work_ms"] = 0.5
    assert list(charts.latency_table(run)["latency"]) == ["queue wait", "service"] * 2


def _twelve() -> pd.DataFrame:
    """12 points whose labels are long: three settings vary."""
    rates = {(chunk, workers): [1_000.0 * chunk / 100 + workers, 1_000.0 * chunk / 100 + workers + 5]
             for chunk in (10_000, 20_000, 30_000, 40_000) for workers in (1, 2, 4)}
    runs = _runs(rates)
    runs["quantity"] = [200_000 if chunk <= 20_000 else 300_000 for chunk in runs["chunkSize"]]
    return charts.with_points(runs)


def _boxes_overlap(ax: plt.Axes) -> bool:
    renderer = ax.figure.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    if labels and labels[0].get_rotation() not in (0, 90):
        # slanted: parallel lines, neighbours apart by their x distance times sin(angle)
        angle = labels[0].get_rotation()
        x0, x1 = (ax.transData.transform((t, 0))[0] for t in ax.get_xticks()[:2])
        height = labels[0].get_window_extent(renderer).height  # of the slanted box: > a line
        line = 1.2 * labels[0].get_fontsize() * ax.figure.dpi / 72
        assert height > line
        return abs(x1 - x0) * math.sin(math.radians(angle)) < line
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    return any(a.x1 > b.x0 for a, b in itertools.pairwise(boxes))


@pytest.mark.parametrize("points", [2, 12])
def test_x_labels_never_overlap_and_the_report_figure_fits_the_page(points: int) -> None:
    runs = _twelve()
    runs = runs[runs["pointIndex"] < points]
    runs = charts.with_points(runs)
    width, height = charts.point_figsize(points)
    assert width * 96 <= 1_200  # the report's 96 dpi: no wider than a 1,280 px page's content
    for draw in (charts.throughput_vs_points, charts.phase_breakdown, charts.windows_by_point):
        fig, ax = plt.subplots(figsize=(width, height))
        draw(runs, ax)
        charts.fit(fig)
        fig.canvas.draw()
        assert len(ax.get_xticklabels()) == points
        assert not _boxes_overlap(ax), (draw.__name__, [t.get_text() for t in ax.get_xticklabels()])
        # the labels, slanted or not, stay inside the figure
        renderer = fig.canvas.get_renderer()
        assert all(t.get_window_extent(renderer).x0 >= 0 for t in ax.get_xticklabels())
        plt.close(fig)


def test_a_baseline_stands_beside_each_point_it_measured() -> None:
    these = _records({(500, 1): [10, 20, 30], (1000, 2): [30, 35, 40]})
    runs = charts.table(these)
    comparison = compare.compare(_records({(500, 1): [5, 6, 7]}), these)
    fig, ax = plt.subplots()
    charts.throughput_vs_points(runs, ax, comparison)
    fig.canvas.draw()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "baseline median" in legend and "baseline IQR" in legend
    grey = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.5, 0.5, 0.5), abs=0.01)]
    assert len(grey) == 1  # only the point the baseline measured
    assert grey[0].get_y() == pytest.approx(5.5) and grey[0].get_height() == pytest.approx(1.0)
    plt.close(fig)


def _records(rates: dict[tuple[int, int], list[float]]) -> list[RunRecord]:
    return [record(rate, i, chunk_size=chunk, concurrency=workers)
            for (chunk, workers), values in rates.items() for i, rate in enumerate(values)]


def test_the_timelines_legend_covers_no_chart_and_no_title() -> None:
    run = _run_with_inside()
    summaries = [compare.PointSummary(compare.Point.of({"chunkSize": c}), compare.Stats.of([1.0]),
                                      [run], [], []) for c in (100, 200, 300, 400)]
    for s in summaries:
        s.runs[0].throughput = None
    fig = plt.figure(figsize=(10.8, 6.1), layout="constrained")
    charts.timelines_by_point(summaries, fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    [legend] = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.axison:
            assert not box.overlaps(ax.get_tightbbox(renderer)), ax.get_title()
    assert not box.overlaps(fig._suptitle.get_window_extent(renderer))
    plt.close(fig)


def test_settings_the_same_in_every_run_are_said_once_not_as_columns() -> None:
    records = _records({(500, 1): [10, 20], (1000, 2): [30]})
    for r in records:
        r.parameters.update(sweep_id="s1", tier_mix="BRONZE=1,PRATA=1,OURO=1,DIAMANTE=1", work_ms=0.0)
    fixed = dict(charts.fixed_settings(records))
    assert fixed["sweep"] == "s1" and fixed["tiers"] == "BRONZE=1,PRATA=1,OURO=1,DIAMANTE=1"
    assert "chunk" not in fixed and "workers" not in fixed
    table = charts.runs_overview(charts.table(records))
    assert list(table.columns) == ["run", "phase", "chunk", "workers", "seed", "total", "orders/s",
                                   "barrier", "coordinator peak MB", "largest worker MB"]
    assert sorted(table["orders/s"]) == ["10", "20", "30"] and set(table["seed"]) == {"1", "2"}
