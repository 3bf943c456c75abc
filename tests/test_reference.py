"""The README's headline figure and the one a run compares itself to are the same."""

from __future__ import annotations

from pathlib import Path

from harness.record import Counts, RunRecord
from harness.reference import HEADLINE, line_for
from harness.runs import format_summary

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_the_readme_quotes_the_headline_figure_with_its_machine() -> None:
    row = next(line for line in README.splitlines() if line.startswith("| 1,000,000 orders"))
    assert HEADLINE.span in row, f"README's first row {row!r} does not quote {HEADLINE.span}"
    section = README.split("## Measured figures", 1)[1].split("\n## ", 1)[0]
    assert HEADLINE.machine in section and HEADLINE.date in section


def _record(quantity: int, total_ms: float, phase: str = "DONE") -> RunRecord:
    return RunRecord(run_id="r", phase=phase, counts=Counts(generated=quantity),
                     total_time_ms=total_ms)


def test_a_run_of_the_headline_size_names_the_figure_it_compares_to() -> None:
    line = line_for(_record(HEADLINE.quantity, 16_400.0))
    assert line is not None and line.startswith("16.4 s here; README.md, Measured figures")
    assert HEADLINE.span in line and HEADLINE.machine in line
    assert "vs README       16.4 s here" in format_summary(_record(HEADLINE.quantity, 16_400.0))


def test_other_sizes_and_unfinished_runs_compare_to_nothing() -> None:
    assert line_for(_record(200_000, 2_000.0)) is None
    assert line_for(_record(HEADLINE.quantity, 16_400.0, phase="ABORTED")) is None
    assert "vs README" not in format_summary(_record(200_000, 2_000.0))
