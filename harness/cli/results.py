"""Results that travel and comparisons you can trust: `harness export` and `harness compare`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from harness import parsing
from harness.cli.options import Integer, Number, OutputFile, Text, connection_options, settings_from
from harness.compare import ALPHA, FACTOR


@click.command(name="export")
@click.option("--sweep", "sweeps", type=Text(parsing.SWEEP_ID), multiple=True,
              help="sweep id to export (repeatable); default: the latest runs")
@click.option("--latest", type=Integer(parsing.LATEST), default=20, show_default=True,
              help="without --sweep: how many of the newest runs")
@click.option("-o", "--output", type=OutputFile(), required=True, help="the JSON file to write")
@connection_options
def export_command(sweeps: tuple[str, ...], latest: int, output: Path, **flags: Any) -> None:
    """Write runs' full records and environment as one versioned JSON file, which
    `harness compare` and `harness report --baseline` take as a baseline."""
    from harness import results

    settings = settings_from(**flags)
    chosen = results.select(settings, sweeps, latest)
    path = results.write(results.export(chosen, sweeps), output, "-o/--output")
    click.echo(f"exported {len(chosen.runs)} runs of {chosen.label} to {path}")


@click.command(name="compare")
@click.argument("baseline", type=Text(parsing.BASELINE))
@click.argument("candidate", type=Text(parsing.CANDIDATE))
@click.option("--factor", type=Number(parsing.FACTOR), default=FACTOR, show_default=True,
              help="flag a point only when its median changed beyond this factor")
@click.option("--alpha", type=Number(parsing.ALPHA), default=ALPHA, show_default=True,
              help="... and a two-sided Mann-Whitney U test gives p below this")
@click.option("--fail-on-regression", is_flag=True,
              help="exit 1 when any point is significantly slower (for CI)")
@click.option("--json", "as_json", is_flag=True, help="print the comparison as JSON")
@connection_options
def compare_command(baseline: str, candidate: str, factor: float, alpha: float,
                    fail_on_regression: bool, as_json: bool, **flags: Any) -> None:
    """Compare CANDIDATE against BASELINE, each a sweep id or a file from `harness export`:
    per parameter point, medians, IQR, n, ratio and a Mann-Whitney U test."""
    from harness import compare, results

    settings = settings_from(**flags)
    base = results.resolve(settings, baseline, "BASELINE")
    cand = results.resolve(settings, candidate, "CANDIDATE")
    comparison = compare.compare(base.runs, cand.runs, factor, alpha, base.label, cand.label,
                                 base.environment, cand.environment)
    click.echo(json.dumps(comparison.to_json(), indent=2) if as_json
               else compare.format_text(comparison))
    if fail_on_regression and comparison.regressions:
        click.echo(f"harness: {len(comparison.regressions)} point(s) significantly slower",
                   err=True)
        sys.exit(1)


@click.command(name="sweeps")
@click.option("--json", "as_json", is_flag=True, help="the sweeps as JSON")
@connection_options
def sweeps_command(as_json: bool, **flags: Any) -> None:
    """The sweeps recorded, newest first: id, when it started, its points and runs, and its
    best point (median orders/s)."""
    from harness import sweeps
    from harness.history import list_runs

    found = sweeps.summarize(list_runs(settings_from(**flags), None,
                                       report=lambda line: click.echo(f"harness: {line}", err=True)))
    click.echo(json.dumps([s.to_json() for s in found], indent=2) if as_json
               else sweeps.format_table(found))
