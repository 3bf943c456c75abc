"""The report's tables and charts computed from runs: medians and quartiles per parameter
point, every run drawn, axes by point, throughput from zero, legends off the data."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from harness import charts
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
    charts.windows_and_gap(runs, axes[2])
    fig.canvas.draw()
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
    assert list(table["p99"]) == ["3.00"] * 4 and len(table) == 4
