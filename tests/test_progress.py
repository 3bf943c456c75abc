"""Progress that reads well where it lands: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.progress import ProgressBar
from harness.state import Phase
from harness.supervision import Progress


def test_piped_progress_is_plain_lines_ending_with_the_runs_own_rate() -> None:
    out = io.StringIO()  # not a terminal
    with ProgressBar(1_000, out) as bar:
        bar(Progress(Phase.GENERATING, 1_000, 500, 0, 0.1))
        bar(Progress(Phase.WAITING_NORMAL_DRAIN, 1_000, 1_000, 600, 0.2))  # within 5 s: held
        bar(Progress(Phase.DONE, 1_000, 1_000, 1_000, 0.25))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "progress: 0 of 1,000 processed (0%), generated 500, GENERATING, 0 orders/s, 100 ms",
        "progress: 1,000 of 1,000 processed (100%), generated 1,000, DONE, 4,000 orders/s, 250 ms",
    ]


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "DATABASE_URL")}
    return {**keep, "REDIS_URL": redis_url, "HARNESS_DATA_DIR": str(tmp_path / "data"),
            "HARNESS_ORDERS_PER_JOB": "100"}


def test_a_piped_run_prints_lines_and_its_last_rate_is_the_summarys(env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-n", "2000"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    assert progress and progress[-1].startswith("progress: 2,000 of 2,000 processed (100%)")
    rate = progress[-1].split(", ")[-2]
    total = next(line for line in proc.stdout.splitlines() if line.startswith("  total"))
    assert f"({rate} overall)" in total, (progress[-1], total)
    wall = next(line for line in proc.stdout.splitlines() if line.startswith("  wall"))
    assert "from the command's start to the record saved" in wall and "stopping workers" in wall


def test_a_terminal_gets_the_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with ProgressBar(1_000, out) as bar:
        bar(Progress(Phase.DONE, 1_000, 1_000, 1_000, 0.25))
    assert "|" in out.getvalue() and "4,000 orders/s" in out.getvalue()


def test_the_last_rate_reads_as_the_summarys_on_a_rounding_edge() -> None:
    """The summary formats the record's rate, rounded to 0.1/s; the bar's, formatted from
    the same division, must not round a second way (17,234.54/s read 17,235 vs 17,234)."""
    from harness import numbers

    elapsed = 2_000 / 17_234.54
    summary = numbers.count(round(2_000 / elapsed, 1))  # as the record's throughput.overall
    assert numbers.rate(Progress(Phase.DONE, 2_000, 2_000, 2_000, elapsed).rate) == f"{summary} orders/s"
