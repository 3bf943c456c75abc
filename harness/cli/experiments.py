"""Measuring and experimenting: `harness bench`, `sweep` and `report`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from harness import parsing
from harness.cli.options import (
    Integer,
    IntegerList,
    Number,
    OutputFile,
    Text,
    connection_options,
    setting,
    settings_from,
)
from harness.compare import ALPHA, FACTOR
from harness.config import INT_RANGES, RULES, option_help
from harness.errors import ConfigError

# A bench row's worker count: workers it starts itself (a run's -c 0 waits for others).
LEVEL = parsing.Integer("concurrency", 1, INT_RANGES["concurrency"][1])


@click.command(name="bench")
@click.option("-n", "--quantity", type=setting("quantity"),
              help="N, the largest size [default: HARNESS_QUANTITY]")
@click.option("--sizes", type=IntegerList(RULES["quantity"]),
              help="comma-separated sizes for the memory and scaling rows [default: N/10, 3N/10, N]")
@click.option("--concurrency-levels", type=IntegerList(LEVEL), default="1,2,4",
              show_default=True, help="worker counts for the concurrency rows, at N")
@click.option("--chunk-size", type=setting("chunk_size"), help=option_help("chunk_size"))
@click.option("-j", "--orders-per-job", type=setting("orders_per_job"), help=option_help("orders_per_job"))
@click.option("-c", "--concurrency", type=setting("concurrency"), help=option_help("concurrency"))
@click.option("--max-orders", type=setting("max_orders"), help=option_help("max_orders"))
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON instead of tables")
@click.option("-o", "--output", type=OutputFile(),  # checked before hours of measuring
              help="also write the JSON here")
def bench_command(sizes: list[int] | None, concurrency_levels: list[int], as_json: bool,
                  output: Path | None, **flags: Any) -> None:
    """Store floor, end to end, generator, queue overhead, status latency, memory and
    scaling, in one go on one backend; prints tables (or JSON) and the targets met."""
    from harness.bench import bench, format_table

    settings = settings_from(**flags)
    n = settings.quantity
    size_list = sizes or sorted({max(1, n // 10), max(1, 3 * n // 10), n})
    for size in size_list:  # validated like a run's quantity, before anything is written
        settings.replace(quantity=size)
    if max(size_list) != n:
        # N is the largest size by design (the floor, generator and queue rows run at N):
        # never change a given N quietly.
        if flags.get("quantity") is not None:
            raise ConfigError(
                f"-n/--quantity {n:,} and --sizes {','.join(map(str, size_list))}: N is the "
                f"largest size, so the largest of --sizes must be {n:,} (got {max(size_list):,}); add {n} to "
                f"--sizes or drop -n", "quantity")
        click.echo(f"bench: N = {max(size_list):,}, the largest of --sizes", err=True)
    levels = concurrency_levels
    for c in levels:
        settings.replace(concurrency=c)
    result = bench(settings.replace(quantity=max(size_list)), size_list, levels,
                   report=lambda line: click.echo(f"bench: {line}", err=True))
    text = json.dumps(result, indent=2)
    if output:
        parsing.write_output(output, text + "\n", "-o/--output")
    click.echo(text if as_json else format_table(result))


# -- experiments: sweeps and reports (notebooks run by papermill) ---------------------------

@click.command(name="sweep")
@click.option("-n", "--quantity", default="200000", show_default=True,
              help="orders per run; comma-separated for a grid (shorthand for --param quantity=...)")
@click.option("--chunk-sizes", default="10000", show_default=True,
              help="comma-separated grid (--param chunk_size=...)")
@click.option("-j", "--orders-per-job", "per_job", default="5000", show_default=True,
              help="comma-separated grid (--param orders_per_job=...)")
@click.option("-c", "--concurrency-levels", default="1,2", show_default=True,
              help="comma-separated grid (--param concurrency=...)")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=A,B",
              help="a grid over any run setting, e.g. normal_batch_size=5000,20000 (repeatable; "
                   "tier_mix takes one value per --param); wins over the shorthands")
@click.option("-r", "--repeats", type=Integer(parsing.REPEATS), default=3, show_default=True,
              help="measured runs per point (4 or more for a comparison that can be significant)")
@click.option("--warmup", type=Integer(parsing.WARMUP), default=0, show_default=True,
              help="warm-up runs per point before the repeats: recorded as such, left out of "
                   "every statistic")
@click.option("--sweep-id", type=setting("sweep_id"),
              help="name of the sweep (default: sweep-<UTC time>)")
@click.option("--baseline", type=Text(parsing.BASELINE), help="sweep id or exported file (harness "
              "export) to compare against in the report; checked before the first point")
@click.option("--no-report", is_flag=True, help="skip the HTML report at the end")
@click.option("--seed", type=setting("seed"), help="one seed for every run [default: the repeat number]")
@click.option("--work-ms", type=setting("work_ms"), help=option_help("work_ms"))
@click.option("--reports-dir", type=setting("reports_dir"), help=option_help("reports_dir"))
@connection_options
def sweep_command(quantity: str, chunk_sizes: str, per_job: str, concurrency_levels: str,
                  params: tuple[str, ...], repeats: int, warmup: int, sweep_id: str | None,
                  baseline: str | None, no_report: bool, **flags: Any) -> None:
    """Run run.ipynb for every grid point and repeat (papermill), then the HTML report.

    Executed notebooks and the report go to reports/<sweep id>/; a failed point is
    recorded and the sweep goes on (exit 1 if any failed)."""
    from harness import ranking, results
    from harness.config import parse_grid, parse_values
    from harness.report import grid_points, preflight, sweep

    settings = settings_from(sweep_id=sweep_id, **flags)
    # Before anything is said or written: the notebooks there, the [notebooks] extra installed.
    preflight(settings, "run.ipynb", *([] if no_report else ["report.ipynb"]))
    shorthands = {"quantity": ("-n/--quantity", quantity), "chunk_size": ("--chunk-sizes", chunk_sizes),
                  "orders_per_job": ("-j/--orders-per-job", per_job),
                  "concurrency": ("-c/--concurrency-levels", concurrency_levels)}
    grid = {name: parse_values(name, text, flag) for name, (flag, text) in shorthands.items()}
    grid.update(parse_grid(params))
    try:  # every point valid before the first runs
        grid_points(settings, grid, repeats, settings.sweep_id or "check", warmup)
    except ConfigError as exc:
        flag = "--param" if any(p.startswith(f"{exc.field}=") for p in params) else (
            shorthands[exc.field][0] if exc.field in shorthands
            else "-r/--repeats" if exc.field == "repeats" else "--param")
        raise ConfigError(f"{flag}: {exc}", exc.field) from None
    if baseline:  # before the first point, not after the last
        results.resolve(settings, baseline, "--baseline")
    manifest = sweep(settings, grid, repeats, sweep_id=sweep_id, with_report=not no_report,
                     baseline=baseline, report=lambda line: click.echo(f"harness: {line}", err=True),
                     warmup=warmup)
    folder = settings.reports_dir / manifest.sweep_id
    click.echo(f"sweep {manifest.sweep_id}: {len(manifest.points)} runs, {manifest.failed} "
               f"failed, {manifest.wall_time_s} s; notebooks in {folder}")
    for point in manifest.points:
        if point.status == "failed":
            click.echo(f"  failed: {point.notebook}: {point.error}")
    # Which point wins, and how sure: as the report opens.
    click.echo("\n" + ranking.rank(results.select(settings, [manifest.sweep_id]).runs).text() + "\n")
    if manifest.report:
        click.echo(f"report: {manifest.report}")
    if manifest.failed:
        sys.exit(1)


@click.command(name="report")
@click.option("--sweep", "sweeps", type=Text(parsing.SWEEP_ID), multiple=True,
              help="sweep id to report (repeatable); default: the latest runs")
@click.option("--baseline", type=Text(parsing.BASELINE),
              help="sweep id or exported file (harness export) to compare against")
@click.option("--factor", type=Number(parsing.FACTOR), default=FACTOR, show_default=True,
              help="flag a change against the baseline only beyond this factor")
@click.option("--alpha", type=Number(parsing.ALPHA), default=ALPHA, show_default=True,
              help="... and when a two-sided Mann-Whitney U test gives p below this")
@click.option("--latest", type=Integer(parsing.LATEST), default=20, show_default=True,
              help="without --sweep: how many of the newest runs")
@click.option("-o", "--output", type=OutputFile(),
              help="HTML file [default: reports/report-<sweeps>.html]")
@click.option("--reports-dir", type=setting("reports_dir"), help=option_help("reports_dir"))
@connection_options
def report_command(sweeps: tuple[str, ...], baseline: str | None, factor: float, alpha: float,
                   latest: int, output: Path | None, **flags: Any) -> None:
    """Execute report.ipynb and write it as one self-contained HTML page (no code cells).

    Sweep ids and the baseline are checked first: one that has no runs ends in one line
    (exit 2), and so does having no runs at all (exit 1)."""
    from harness.report import build_report, preflight

    settings = settings_from(**flags)
    preflight(settings, "report.ipynb")  # before anything is said or written
    for sweep_id in sweeps:
        try:  # a sweep id names a folder: checked here
            settings.replace(sweep_id=sweep_id)
        except ConfigError as exc:
            raise ConfigError(f"--sweep {sweep_id}: {exc}", "sweep_id") from None
    path = build_report(settings, list(sweeps), baseline=baseline, output=output, latest=latest,
                        factor=factor, alpha=alpha)
    click.echo(f"report: {path}")
