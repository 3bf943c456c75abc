"""Charts and tables of runs, shared by the notebooks and so by the HTML reports.

Each function takes the flat table of runs (:func:`runs_table`, one row per run, the
columns of ``harness runs --csv``) or one run record, and draws on an Axes it is given, so
a notebook lays figures out as it likes and a test can draw without a screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from harness.record import RunRecord
from harness.runs import runs_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Phases in the order they happen; together they make up a run's total time.
PHASES = (
    ("generationTimeMs", "generation"),
    ("enqueueVipTimeMs", "enqueue VIP"),
    ("waitVipDrainMs", "VIP drain"),
    ("enqueueNormalTimeMs", "enqueue NORMAL"),
    ("waitNormalDrainMs", "NORMAL drain"),
)
POINT = ["quantity", "chunkSize", "ordersPerJob", "concurrency"]


def table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Run records as the flat table, oldest first (charts read left to right in time)."""
    frame = pd.DataFrame(runs_table(records))
    if frame.empty:
        return frame
    return frame.sort_values("startedAt", kind="stable").reset_index(drop=True)


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
    for key, color in (("vip", "tab:orange"), ("normal", "tab:blue")):
        window = (record.get("processing") or {}).get(key) or {}
        rows.append((f"{key.upper()} window", span(window.get("start"), window.get("end")), color))
    for y, (_label, bar, color) in enumerate(rows):
        if bar is not None:
            ax.broken_barh([bar], (y - 0.35, 0.7), color=color)
    last_vip = (record.get("barrier") or {}).get("lastVipProcessedAt")
    if last_vip:
        x = (pd.Timestamp(last_vip) - t0).total_seconds()
        ax.axvline(x, color="black", linestyle="--", linewidth=1, label="last VIP processed")
        ax.legend(loc="lower right")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.set_title(f"run {run.run_id}: {run.counts.generated:,} orders")


def phase_times(runs: pd.DataFrame, ax: Axes) -> None:
    """Each run's total split into its phases, stacked."""
    data = runs.set_index("runId")[[c for c, _ in PHASES]].fillna(0) / 1000
    data.columns = [label for _, label in PHASES]
    data.plot.bar(stacked=True, ax=ax, width=0.8)
    ax.set_ylabel("seconds")
    ax.set_xlabel("")
    ax.set_title("phase times per run")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)


def throughput_by_concurrency(runs: pd.DataFrame) -> pd.DataFrame:
    """Median and interquartile range of orders/s over repeats, per chunk size and
    concurrency (DONE runs only)."""
    done = runs[runs["phase"] == "DONE"]
    grouped = done.groupby(["chunkSize", "concurrency"])["overallPerSec"]
    return pd.DataFrame({
        "median": grouped.median(), "q25": grouped.quantile(0.25), "q75": grouped.quantile(0.75),
        "runs": grouped.size(),
    }).reset_index()


def throughput_vs_concurrency(runs: pd.DataFrame, ax: Axes) -> None:
    """Orders/s against workers, one line per chunk size: median, whiskers at the quartiles."""
    stats = throughput_by_concurrency(runs)
    for chunk, part in stats.groupby("chunkSize"):
        ax.errorbar(part["concurrency"], part["median"],
                    yerr=[part["median"] - part["q25"], part["q75"] - part["median"]],
                    marker="o", capsize=4, label=f"chunk {int(chunk):,}")
    ax.set_xlabel("workers (concurrency)")
    ax.set_ylabel("orders/s, generation to DONE")
    ax.set_xticks(sorted(stats["concurrency"].unique()))
    ax.set_title("throughput (median, interquartile whiskers)")
    ax.legend()


def windows_and_gap(runs: pd.DataFrame, ax: Axes) -> None:
    """VIP and NORMAL processing windows per run, and the barrier gap on its own axis."""
    data = runs.set_index("runId")[["vipTimeMs", "normalTimeMs"]].fillna(0) / 1000
    data.columns = ["VIP window", "NORMAL window"]
    data.plot.bar(ax=ax, width=0.8, color=["tab:orange", "tab:blue"])
    ax.set_ylabel("seconds")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    gap = ax.twinx()
    gap.plot(range(len(runs)), runs["barrierGapMs"], "k.", label="barrier gap (ms)")
    gap.set_ylabel("barrier gap, ms (≥ 0: held)")
    gap.axhline(0, color="red", linewidth=0.8)
    gap.legend(loc="upper left")
    ax.set_title("processing windows and barrier gap per run")


def compare(runs: pd.DataFrame, baseline: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Median orders/s per parameter point, against the baseline's; a change beyond
    ``factor`` either way is flagged."""
    def medians(frame: pd.DataFrame) -> pd.Series:
        return frame[frame["phase"] == "DONE"].groupby(POINT)["overallPerSec"].median()

    out = pd.DataFrame({"baseline": medians(baseline), "now": medians(runs)}).dropna()
    out["ratio"] = (out["now"] / out["baseline"]).round(3)
    out["flag"] = ""
    out.loc[out["ratio"] > factor, "flag"] = f"faster (> {factor}x)"
    out.loc[out["ratio"] < 1 / factor, "flag"] = f"SLOWER (< 1/{factor}x)"
    return out.reset_index()
