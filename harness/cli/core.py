"""Running: `harness run`, `status`, `runs` and `worker`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from harness import numbers, parsing
from harness.cli.options import Integer, connection_options, setting, settings_from
from harness.config import option_help
from harness.progress import ProgressBar

if TYPE_CHECKING:
    from harness.record import RunRecord


@click.command()
@click.option("-n", "--quantity", type=setting("quantity"), help=option_help("quantity"))
@click.option("--chunk-size", type=setting("chunk_size"), help=option_help("chunk_size"))
@click.option("--normal-batch-size", type=setting("normal_batch_size"),
              help=option_help("normal_batch_size"))
@click.option("-j", "--orders-per-job", type=setting("orders_per_job"), help=option_help("orders_per_job"))
@click.option("-c", "--concurrency", type=setting("concurrency"), help=option_help("concurrency"))
@click.option("--seed", type=setting("seed"), help=option_help("seed"))
@click.option("--tier-mix", type=setting("tier_mix"), help=option_help("tier_mix"))
@click.option("--work-ms", type=setting("work_ms"), help=option_help("work_ms"))
@click.option("--max-orders", type=setting("max_orders"), help=option_help("max_orders"))
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the run record as JSON")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--no-workers", is_flag=True,
              help="start no workers; rely on `harness worker` processes (here or on other hosts)")
@click.option("--force", is_flag=True,
              help="if a run is active, cancel it (keeping its orders' state) and take over")
def run(as_json: bool, no_progress: bool, no_workers: bool, force: bool, **flags: Any) -> None:
    """Generate, store and process orders VIP first; print the run's summary.

    Exits 0 only when the run reached DONE with its barrier proven.
    """
    from harness.pipeline import run as run_pipeline

    settings = settings_from(**flags)
    run_id = launched_run_id()
    with ProgressBar(settings.quantity, sys.stderr) as bar:
        record = run_pipeline(settings, progress=None if no_progress else bar,
                              start_workers=not no_workers, force=force, run_id=run_id,
                              command_start=process_start())
    _report(record, as_json)


@click.command()
@click.argument("run_id", required=False)
@click.option("-c", "--concurrency", type=setting("concurrency"),
              help="worker processes (default: as the run was started)")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the run record as JSON")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--no-workers", is_flag=True, help="start no workers; rely on `harness worker`")
def resume(run_id: str | None, concurrency: int | None, as_json: bool, no_progress: bool,
           no_workers: bool, **flags: Any) -> None:
    """Finish the latest run (or RUN_ID, if it is the latest) after it stopped before DONE:
    coordinator killed, Redis restarted, store gone for a while, batches dead-lettered.

    The store is the truth: only the chunks it lacks are generated again (same seed, same
    orders), every pending order is enqueued, VIP first, and the run keeps its id. Exits 0
    only when it reaches DONE with its barrier proven.
    """
    from harness.pipeline import resume as resume_run

    settings = settings_from(concurrency=concurrency, **flags)  # checks -c
    with ProgressBar(None, sys.stderr) as bar:
        record = resume_run(settings, run_id, progress=None if no_progress else bar,
                            start_workers=not no_workers, concurrency=concurrency,
                            command_start=process_start())
    _report(record, as_json)


def process_start() -> float:
    """When this command's process started, as a ``time.monotonic()`` reading, so that its
    wall time includes Python's start-up and imports.

    From the process's age in clock ticks (10 ms) since boot: psutil's ``create_time()``
    adds it to the boot time, which Linux gives in whole seconds, and was measured 0.9 s
    off here.
    """
    import os
    import time
    from pathlib import Path

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - age  # both clocks count from boot, bar a suspend
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        import psutil

        return time.monotonic() - (time.time() - float(psutil.Process().create_time()))


def launched_run_id() -> str | None:
    """The run id a launcher chose for this run (HARNESS_RUN_ID), checked as every given run
    id is (:mod:`harness.run_ids`; the run refuses one that is taken)."""
    import os

    from harness import run_ids
    from harness.launch import RUN_ID_VAR

    value = os.environ.get(RUN_ID_VAR)
    return None if value is None else run_ids.check(value, RUN_ID_VAR)


def _report(record: RunRecord, as_json: bool) -> None:
    from harness.runs import format_summary

    click.echo(json.dumps(record.to_json(), indent=2) if as_json else format_summary(record))
    if not record.is_done:
        sys.exit(1)


@click.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the GET /pedidos JSON document")
def status(as_json: bool, **flags: Any) -> None:
    """Live status of the current or last run (reads Redis only)."""
    from harness.connection import connect_redis
    from harness.status import get_status

    doc = get_status(connect_redis(settings_from(**flags), autostart=False))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    prog, eta = doc["progress"], doc["eta"]
    click.echo(f"run {doc['lastRunId'] or '-'}: {doc['phase']}")
    click.echo(f"  generated {prog['generated']:,} of {prog['target']:,}; processed "
               f"{prog['processedTotal']:,} ({eta['progressPercent']}%), "
               f"VIP {doc['counts']['vip']:,}, NORMAL {doc['counts']['normal']:,}")
    if eta["estimatedMs"] is not None:
        click.echo(f"  eta {eta['estimatedMs'] / 1000:.1f} s; elapsed "
                   f"{(doc['totalTimeMs'] or 0) / 1000:.1f} s")
    if doc["error"]:
        click.echo(f"  error: {doc['error']}")
    if doc.get("workers"):  # the workers that did its batches, on any host
        click.echo("  workers: " + ", ".join(f"{w['host']}:{w['pid']} ({w['batches']} batches)"
                                             for w in doc["workers"]))
    dead = doc["deadLetters"]
    if dead["count"]:
        click.echo(f"  dead letters: {dead['count']} batch(es) failed every try; "
                   "`harness retry-failed` requeues them")
        for batch in dead["batches"]:
            click.echo(f"    {batch['priority']} batch {batch['id']} ({batch['orders']} orders, "
                       f"run {batch['runId']}): {batch['error']}")


# `harness runs`' plain table: counts with separators, the total as 11.8 s (CSV and JSON keep
# the stored numbers).
BRIEF_NUMBERS: dict[str, Callable[[Any], str]] = {
    "quantity": numbers.count, "ordersPerJob": numbers.count, "totalTimeMs": numbers.duration,
    "overallPerSec": numbers.count}


@click.command()
@connection_options
@click.option("--limit", type=Integer(parsing.LIMIT), help="newest N runs only")
@click.option("--json", "as_json", is_flag=True, help="full records as JSON")
@click.option("--csv", "as_csv", is_flag=True, help="the table as CSV")
def runs(limit: int | None, as_json: bool, as_csv: bool, **flags: Any) -> None:
    """Run history from process_runs, newest first."""
    from harness.extras import require

    pd = require("pandas")

    from harness.history import list_runs
    from harness.record import BRIEF_COLUMNS, COLUMN_NAMES
    from harness.runs import runs_table

    records = list_runs(settings_from(**flags), limit,
                        report=lambda line: click.echo(f"harness: {line}", err=True))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    table = pd.DataFrame(runs_table(records), columns=list(COLUMN_NAMES))
    if as_csv:
        click.echo(table.to_csv(index=False), nl=False)
    elif table.empty:
        click.echo("no runs recorded yet")
    else:
        brief = table[list(BRIEF_COLUMNS)].astype(object)
        for column, written in BRIEF_NUMBERS.items():  # numbers as the run summary writes them
            brief[column] = [written(v) if pd.notna(v) else "" for v in brief[column]]
        brief = brief.rename(columns={"totalTimeMs": "total", "overallPerSec": "orders/s"})
        click.echo(brief.fillna("").to_string(index=False))


@click.command()
@connection_options
@click.option("-c", "--concurrency", type=setting("concurrency"), help=option_help("concurrency"))
@click.option("--burst", is_flag=True, help="exit once the queues are empty")
def worker(burst: bool, **flags: Any) -> None:
    """Start workers on their own, e.g. on another host joining a run through the same
    Redis and store. Stops on Ctrl-C / SIGTERM (running batches finish first)."""
    from harness.errors import ConfigError
    from harness.worker import run_pool

    settings = settings_from(**flags)
    if settings.concurrency < 1:  # 0 is a run's "no workers of its own"; a pool needs some
        source = "-c/--concurrency" if flags.get("concurrency") is not None else "ORDERS_QUEUE_CONCURRENCY"
        raise ConfigError(f"{source} 0: harness worker starts at least 1 worker", "concurrency")
    click.echo(f"harness: starting {settings.concurrency} worker(s)", err=True)
    run_pool(settings, burst=burst, logging_level="INFO")
