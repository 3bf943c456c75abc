"""The ``harness`` command: a thin layer over the Python API.

Every command reads the same settings (environment, then flags). Errors a user can cause
or fix (a bad value, an unreachable service, a run already active) end in one line on
stderr and a non-zero exit: 2 for bad input, 1 for everything else.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from harness.config import ConfigError, Settings, option_help, redact
from harness.connection import RedisUnavailable
from harness.state import RunActive
from harness.store import StoreError

SERVICE_ERRORS = (RedisUnavailable, StoreError, RunActive)


class HarnessGroup(click.Group):
    """Turns the harness's own errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"harness: error: {exc}", err=True)
            ctx.exit(2)
        except SERVICE_ERRORS as exc:
            click.echo(f"harness: error: {exc}", err=True)
            ctx.exit(1)


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that say where Redis and the store are; each overrides its env var."""
    options = [
        click.option("--mongo-uri", help=option_help("mongo_uri")),
        click.option("--mongo-db", help=option_help("mongo_db")),
        click.option("--redis-url", help=option_help("redis_url")),
        click.option("--data-dir", type=click.Path(file_okay=False), help=option_help("data_dir")),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log what the harness does")
def main(verbose: bool) -> None:
    """Benchmark harness for a VIP-first order-processing pipeline (RQ + Redis + a store)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


class RedactingFormatter(logging.Formatter):
    """Every log line, tracebacks included, with connection-string passwords masked: an
    exception message may quote a URI."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


@main.command()
@click.option("-n", "--quantity", type=int, help=option_help("quantity"))
@click.option("--chunk-size", type=int, help=option_help("chunk_size"))
@click.option("--normal-batch-size", type=int, help=option_help("normal_batch_size"))
@click.option("-j", "--orders-per-job", type=int, help=option_help("orders_per_job"))
@click.option("-c", "--concurrency", type=int, help=option_help("concurrency"))
@click.option("--seed", type=int, help=option_help("seed"))
@click.option("--tier-mix", help=option_help("tier_mix"))
@click.option("--work-ms", type=float, help=option_help("work_ms"))
@click.option("--max-orders", type=int, help=option_help("max_orders"))
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the run record as JSON")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--no-workers", is_flag=True,
              help="start no workers; rely on `harness worker` processes (here or on other hosts)")
def run(as_json: bool, no_progress: bool, no_workers: bool, **flags: Any) -> None:
    """Generate, store and process orders VIP first; print the run's summary.

    Exits 0 only when the run reached DONE with its barrier proven.
    """
    from harness.pipeline import run as run_pipeline
    from harness.runs import format_summary

    settings = Settings.from_env(**flags)
    progress, close = (None, lambda: None) if no_progress else _progress_bar(settings.quantity)
    try:
        record = run_pipeline(settings, progress=progress, start_workers=not no_workers)
    finally:
        close()
    click.echo(json.dumps(record, indent=2) if as_json else format_summary(record))
    if record["phase"] != "DONE":
        sys.exit(1)


def _progress_bar(total: int) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A tqdm bar of processed orders, opened on the first report (not before an error)."""
    from tqdm import tqdm

    bars: list[Any] = []

    def update(p: Any) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="order", unit_scale=True, dynamic_ncols=True,
                             mininterval=0.5, file=sys.stderr, desc="processed"))
        bars[0].set_postfix_str(f"{p.phase.value}, generated {p.generated:,}", refresh=False)
        bars[0].update(p.processed - bars[0].n)

    def close() -> None:
        if bars:
            bars[0].close()

    return update, close


@main.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the GET /pedidos JSON document")
def status(as_json: bool, **flags: Any) -> None:
    """Live status of the current or last run (reads Redis only)."""
    from harness.connection import connect_redis
    from harness.status import get_status

    doc = get_status(connect_redis(Settings.from_env(**flags), autostart=False))
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


@main.command()
@connection_options
@click.option("--limit", type=click.IntRange(min=1), help="newest N runs only")
@click.option("--json", "as_json", is_flag=True, help="full records as JSON")
@click.option("--csv", "as_csv", is_flag=True, help="the table as CSV")
def runs(limit: int | None, as_json: bool, as_csv: bool, **flags: Any) -> None:
    """Run history from process_runs, newest first."""
    import pandas as pd

    from harness.runs import BRIEF_COLUMNS, RUN_COLUMNS, runs_table
    from harness.store import open_store

    store = open_store(Settings.from_env(**flags))
    try:
        records = store.list_runs(limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    table = pd.DataFrame(runs_table(records), columns=[c for c, _ in RUN_COLUMNS])
    if as_csv:
        click.echo(table.to_csv(index=False), nl=False)
    elif table.empty:
        click.echo("no runs recorded yet")
    else:
        click.echo(table[list(BRIEF_COLUMNS)].fillna("").to_string(index=False))


@main.command()
@connection_options
@click.option("-c", "--concurrency", type=int, help=option_help("concurrency"))
@click.option("--burst", is_flag=True, help="exit once the queues are empty")
def worker(burst: bool, **flags: Any) -> None:
    """Start workers on their own, e.g. on another host joining a run through the same
    Redis and store. Stops on Ctrl-C / SIGTERM (running batches finish first)."""
    from harness.worker import run_pool

    settings = Settings.from_env(**flags)
    click.echo(f"harness: starting {settings.concurrency} worker(s)", err=True)
    run_pool(settings, burst=burst, logging_level="INFO")


if __name__ == "__main__":
    main()
