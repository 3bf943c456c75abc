"""The report's tables computed from runs: medians, quartiles and baseline flags."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from harness import charts


def _runs(rates: dict[tuple[int, int], list[float]], phase: str = "DONE") -> pd.DataFrame:
    rows = []
    for (chunk, workers), values in rates.items():
        for i, rate in enumerate(values):
            rows.append({"runId": f"r{chunk}-{workers}-{i}", "phase": phase, "quantity": 1000,
                         "chunkSize": chunk, "ordersPerJob": 100, "concurrency": workers,
                         "overallPerSec": rate, "vipTimeMs": 10.0, "normalTimeMs": 20.0,
                         "barrierGapMs": 1.5, **{c: 5.0 for c, _ in charts.PHASES}})
    return pd.DataFrame(rows)


def test_throughput_median_and_quartiles_over_repeats_ignore_failed_runs() -> None:
    runs = pd.concat([_runs({(500, 1): [10, 20, 30, 40], (500, 2): [50]}),
                      _runs({(500, 1): [1_000_000]}, phase="ERROR")])
    stats = charts.throughput_by_concurrency(runs).set_index(["chunkSize", "concurrency"])
    assert stats.loc[(500, 1), "median"] == 25 and stats.loc[(500, 1), "runs"] == 4
    assert stats.loc[(500, 1), "q25"] == 17.5 and stats.loc[(500, 1), "q75"] == 32.5
    assert stats.loc[(500, 2), "median"] == 50


def test_compare_flags_changes_beyond_the_factor_either_way() -> None:
    base = _runs({(500, 1): [100, 100], (500, 2): [100], (1000, 1): [100]})
    now = _runs({(500, 1): [130, 130], (500, 2): [110], (1000, 1): [70]})
    diff = charts.compare(now, base, factor=1.2).set_index(["chunkSize", "concurrency"])
    assert diff.loc[(500, 1), "ratio"] == 1.3 and diff.loc[(500, 1), "flag"].startswith("faster")
    assert diff.loc[(500, 2), "flag"] == ""
    assert diff.loc[(1000, 1), "flag"].startswith("SLOWER")


def test_charts_draw_every_run() -> None:
    runs = _runs({(500, 1): [10, 20], (1000, 2): [30]})
    fig, axes = plt.subplots(1, 3)
    charts.throughput_vs_concurrency(runs, axes[0])
    charts.phase_times(runs, axes[1])
    charts.windows_and_gap(runs, axes[2])
    assert len(axes[0].get_legend().get_texts()) == 2  # one line per chunk size
    assert len(axes[1].patches) == 3 * len(charts.PHASES)  # a stacked bar per run
    assert len(axes[2].patches) == 3 * 2  # VIP and NORMAL per run
    plt.close(fig)
