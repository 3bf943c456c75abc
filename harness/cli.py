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

from harness import logs
from harness.bench import BenchFailed
from harness.config import ConfigError, Settings, option_help
from harness.connection import RedisUnavailable
from harness.control import CancelTimeout
from harness.report import NotebookMissing
from harness.state import RunActive
from harness.store import StoreError

SERVICE_ERRORS = (
    RedisUnavailable, StoreError, RunActive, CancelTimeout, NotebookMissing, BenchFailed,
)


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
    handler.setFormatter(logs.RedactingFormatter(logs.FORMAT))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger(logs.LOGGER).setLevel(logging.INFO)  # for the log file, if one is on


def settings_from(**flags: Any) -> Settings:
    """Settings from the environment and flags; starts file logging when they ask for it."""
    settings = Settings.from_env(**flags)
    logs.configure(settings)
    return settings


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
@click.option("--force", is_flag=True,
              help="if a run is active, cancel it (keeping its orders' state) and take over")
def run(as_json: bool, no_progress: bool, no_workers: bool, force: bool, **flags: Any) -> None:
    """Generate, store and process orders VIP first; print the run's summary.

    Exits 0 only when the run reached DONE with its barrier proven.
    """
    from harness.pipeline import run as run_pipeline
    from harness.runs import format_summary

    settings = settings_from(**flags)
    progress, close = (None, lambda: None) if no_progress else _progress_bar(settings.quantity)
    try:
        record = run_pipeline(settings, progress=progress, start_workers=not no_workers,
                              force=force)
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

    store = open_store(settings_from(**flags))
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

    settings = settings_from(**flags)
    click.echo(f"harness: starting {settings.concurrency} worker(s)", err=True)
    run_pool(settings, burst=burst, logging_level="INFO")



def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers",
                                 param_hint=name) from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: every value must be >= 1", param_hint=name)
    return values


@main.command(name="bench")
@click.option("-n", "--quantity", type=int, help="N, the largest size [default: HARNESS_QUANTITY]")
@click.option("--sizes", help="comma-separated sizes for the memory and scaling rows "
                              "[default: N/10, 3N/10, N]")
@click.option("--concurrency-levels", default="1,2,4", show_default=True,
              help="worker counts for the concurrency rows, at N")
@click.option("--chunk-size", type=int, help=option_help("chunk_size"))
@click.option("-j", "--orders-per-job", type=int, help=option_help("orders_per_job"))
@click.option("-c", "--concurrency", type=int, help=option_help("concurrency"))
@click.option("--max-orders", type=int, help=option_help("max_orders"))
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON instead of tables")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="also write the JSON here")
def bench_command(sizes: str | None, concurrency_levels: str, as_json: bool,
                  output: str | None, **flags: Any) -> None:
    """Store floor, end to end, generator, queue overhead, status latency, memory and
    scaling, in one go on one backend; prints tables (or JSON) and the targets met."""
    from harness.bench import bench, format_table

    settings = settings_from(**flags)
    n = settings.quantity
    size_list = _int_list(sizes, "--sizes") if sizes else sorted({max(1, n // 10),
                                                                  max(1, 3 * n // 10), n})
    for size in size_list:  # validated like a run's quantity, before anything is written
        settings.replace(quantity=size)
    levels = _int_list(concurrency_levels, "--concurrency-levels")
    for c in levels:
        settings.replace(concurrency=c)
    result = bench(settings.replace(quantity=max(size_list)), size_list, levels,
                   report=lambda line: click.echo(f"bench: {line}", err=True))
    text = json.dumps(result, indent=2)
    if output:
        with open(output, "w") as f:
            f.write(text + "\n")
    click.echo(text if as_json else format_table(result))


# -- experiments: sweeps and reports (notebooks run by papermill) ---------------------------

@main.command(name="sweep")
@click.option("-n", "--quantity", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="orders per run")
@click.option("--chunk-sizes", default="10000", show_default=True, help="comma-separated grid")
@click.option("-j", "--orders-per-job", "per_job", default="1000", show_default=True,
              help="comma-separated grid")
@click.option("-c", "--concurrency-levels", default="1,2", show_default=True,
              help="comma-separated grid")
@click.option("-r", "--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--sweep-id", help="name of the sweep (default: sweep-<UTC time>)")
@click.option("--baseline", help="sweep id to compare against in the report")
@click.option("--no-report", is_flag=True, help="skip the HTML report at the end")
@click.option("--seed", type=int, help="one seed for every run [default: the repeat number]")
@click.option("--work-ms", type=float, help=option_help("work_ms"))
@click.option("--reports-dir", type=click.Path(file_okay=False), help=option_help("reports_dir"))
@connection_options
def sweep_command(quantity: int, chunk_sizes: str, per_job: str, concurrency_levels: str,
                  repeats: int, sweep_id: str | None, baseline: str | None, no_report: bool,
                  **flags: Any) -> None:
    """Run run.ipynb for every grid point and repeat (papermill), then the HTML report.

    Executed notebooks and the report go to reports/<sweep id>/; a failed point is
    recorded and the sweep goes on (exit 1 if any failed)."""
    from harness.report import sweep

    settings = settings_from(**flags)
    grids = {name: _int_list(text, f"--{name}") for name, text in (
        ("chunk-sizes", chunk_sizes), ("orders-per-job", per_job),
        ("concurrency-levels", concurrency_levels))}
    for c in grids["chunk-sizes"]:  # every point valid before the first runs
        for j in grids["orders-per-job"]:
            for w in grids["concurrency-levels"]:
                settings.replace(quantity=quantity, chunk_size=c, orders_per_job=j, concurrency=w,
                                 sweep_id=sweep_id)
    total = repeats * len(grids["chunk-sizes"]) * len(grids["orders-per-job"]) * len(
        grids["concurrency-levels"])
    click.echo(f"harness: sweep of {total} runs of {quantity:,} orders", err=True)
    manifest = sweep(settings, grids["chunk-sizes"], grids["orders-per-job"],
                     grids["concurrency-levels"], repeats, quantity, sweep_id=sweep_id,
                     with_report=not no_report, baseline=baseline,
                     report=lambda line: click.echo(f"harness: {line}", err=True))
    folder = settings.reports_dir / manifest["sweepId"]
    click.echo(f"sweep {manifest['sweepId']}: {len(manifest['points'])} runs, "
               f"{manifest['failed']} failed, {manifest['wallTimeS']} s; notebooks in {folder}")
    for point in manifest["points"]:
        if point["status"] == "failed":
            click.echo(f"  failed: {point['notebook']}: {point['error']}")
    if manifest.get("report"):
        click.echo(f"report: {manifest['report']}")
    if manifest["failed"]:
        sys.exit(1)


@main.command(name="report")
@click.option("--sweep", "sweeps", multiple=True, help="sweep id to report (repeatable); "
                                                       "default: the latest runs")
@click.option("--baseline", help="sweep id to compare against")
@click.option("--factor", type=click.FloatRange(min=1.0, min_open=True), default=1.2,
              show_default=True, help="flag changes against the baseline beyond this factor")
@click.option("--latest", type=click.IntRange(min=1), default=20, show_default=True,
              help="without --sweep: how many of the newest runs")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="HTML file [default: reports/report-<sweeps>.html]")
@click.option("--reports-dir", type=click.Path(file_okay=False), help=option_help("reports_dir"))
@connection_options
def report_command(sweeps: tuple[str, ...], baseline: str | None, factor: float, latest: int,
                   output: str | None, **flags: Any) -> None:
    """Execute report.ipynb and write it as one self-contained HTML page (no code cells)."""
    from pathlib import Path

    from harness.report import build_report

    settings = settings_from(**flags)
    for sweep_id in (*sweeps, *([baseline] if baseline else [])):
        settings.replace(sweep_id=sweep_id)  # a sweep id names a folder: checked here
    path = build_report(settings, list(sweeps), baseline=baseline,
                        output=Path(output) if output else None, latest=latest, factor=factor)
    click.echo(f"report: {path}")


# -- run control (the original's /pedidos/cancel, /reset, /logs, /health/queue) ------------

@main.command()
@connection_options
@click.option("--purge/--no-purge", default=True, show_default=True,
              help="remove the run's queued jobs")
@click.option("--remove-pending/--keep-pending", default=True, show_default=True,
              help="delete the orders not processed yet from the store")
@click.option("--reset-metrics", is_flag=True,
              help="also clear the live metrics (status shows IDLE; the run record stays)")
@click.option("--timeout", "cancel_timeout_s", type=float, help=option_help("cancel_timeout_s"))
@click.option("--json", "as_json", is_flag=True, help="print the result and the run record as JSON")
def cancel(purge: bool, remove_pending: bool, reset_metrics: bool, as_json: bool,
           **flags: Any) -> None:
    """Cancel the active run: nothing new starts, running batches stop at their next check,
    processed orders stay; the run is recorded ABORTED with its partial figures."""
    from harness.control import cancel as cancel_run

    settings = settings_from(**flags)
    result = cancel_run(settings, purge=purge, remove_pending=remove_pending,
                        reset_metrics=reset_metrics)
    info = (result.record or {}).get("cancel") or {}
    if as_json:
        click.echo(json.dumps({"cancelled": result.cancelled, "runId": result.run_id,
                               "message": result.message, "elapsedMs": result.elapsed_ms,
                               "record": result.record}, indent=2))
        return
    click.echo(result.message)
    if result.cancelled:
        processed = ((result.record or {}).get("counts") or {}).get("processed")
        click.echo(f"  during {info.get('phase', '?')}; last job stopped "
                   f"{info.get('lastJobStoppedMs')} ms after the request; cancel took "
                   f"{result.elapsed_ms} ms")
        click.echo(f"  processed orders kept: {processed}; pending orders removed: "
                   f"{info.get('removedPending', 0)}")


@main.command()
@connection_options
@click.option("--all", "all_runs", is_flag=True, help="also delete the run history (process_runs)")
@click.option("--force", is_flag=True, help="cancel an active run first")
def reset(all_runs: bool, force: bool, **flags: Any) -> None:
    """Delete orders, queued jobs, live metrics and state; run history stays unless --all."""
    from harness.control import reset as reset_all

    done = reset_all(settings_from(**flags), all_runs=all_runs, force=force)
    click.echo(f"reset: {done['orders']:,} orders, {done['jobs']:,} jobs"
               + (f", {done['runs']:,} run records" if all_runs else "; run history kept"))


@main.command(name="logs")
@connection_options
@click.option("-n", "--lines", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False), help=option_help("log_file"))
def logs_command(lines: int, **flags: Any) -> None:
    """Print the last lines of the log file (BACKEND_LOGS=true or HARNESS_LOG_FILE)."""
    settings = Settings.from_env(**flags)
    path = settings.log_path or settings.data_dir / "harness.log"
    if not path.exists():
        click.echo(f"harness: error: no log file at {path}; set BACKEND_LOGS=true (or "
                   "HARNESS_LOG_FILE) for runs to write one", err=True)
        sys.exit(1)
    for line in logs.tail(path, lines):
        click.echo(line)


@main.command()
@connection_options
@click.option("--stuck-after", "stuck_after_s", type=float, help=option_help("stuck_after_s"))
@click.option("--json", "as_json", is_flag=True, help="print the health document as JSON")
def health(as_json: bool, **flags: Any) -> None:
    """Queue counts, run phase and a classification. Exit code: 0 healthy, 1 error,
    3 degraded (failed jobs or stuck), 4 paused, 5 aborted."""
    from harness.control import HEALTH_EXIT
    from harness.control import health as check

    settings = settings_from(**flags)
    try:
        doc = check(settings)
    except RedisUnavailable as exc:
        doc = {"status": "error", "reasons": [str(exc)]}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"{doc['status']}" + (f": {'; '.join(doc['reasons'])}" if doc["reasons"] else ""))
        if "queue" in doc:
            q = doc["queue"]
            click.echo(f"  run {doc['runId'] or '-'} {doc['phase']}; workers {doc['workers']}; "
                       + ", ".join(f"{k} {v}" for k, v in q.items()))
    sys.exit(HEALTH_EXIT[doc["status"]])


@main.group(name="queue")
def queue_group() -> None:
    """Queue controls: pause, resume, clean, status, jobs, close."""


def _queue_conn(flags: dict[str, Any]) -> Any:
    from harness.connection import connect_redis

    return connect_redis(settings_from(**flags), autostart=False)


@queue_group.command()
@connection_options
def pause(**flags: Any) -> None:
    """Workers take no new job until `harness queue resume` (running batches finish)."""
    from harness import queue as q

    q.pause(_queue_conn(flags))
    click.echo("queues paused")


@queue_group.command()
@connection_options
def resume(**flags: Any) -> None:
    """Let workers take jobs again."""
    from harness import queue as q

    q.resume(_queue_conn(flags))
    click.echo("queues resumed")


@queue_group.command()
@connection_options
@click.argument("state", type=click.Choice(["waiting", "completed", "failed", "deferred",
                                            "scheduled", "all"]))
@click.option("--force", is_flag=True, help="clean waiting jobs even while a run is active")
def clean(state: str, force: bool, **flags: Any) -> None:
    """Delete every job in STATE from both queues (running jobs cannot be taken back)."""
    from harness import queue as q
    from harness.state import RunState

    conn = _queue_conn(flags)
    if state in ("waiting", "all") and not force and (holder := RunState(conn).holder()):
        raise RunActive(f"run {holder.run_id} is active and needs its waiting jobs; "
                        "use `harness cancel`, or --force", holder)
    states = [s for s in q.STATES if s != "active"] if state == "all" else [state]
    removed = sum(q.clean(conn, s) for s in states)
    click.echo(f"removed {removed:,} {state} job(s)")


@queue_group.command(name="status")
@connection_options
@click.option("--json", "as_json", is_flag=True)
def queue_status(as_json: bool, **flags: Any) -> None:
    """Raw job counts per queue and state, and whether the queues are paused."""
    from harness import queue as q

    conn = _queue_conn(flags)
    doc = {"paused": q.is_paused(conn), "workers": q.worker_count(conn), "counts": q.counts(conn)}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    import pandas as pd

    click.echo(f"paused: {doc['paused']}; workers: {doc['workers']}")
    click.echo(pd.DataFrame(doc["counts"]).T.to_string())


@queue_group.command()
@connection_options
@click.option("-t", "--types", default="waiting,active", show_default=True,
              help="comma-separated states: waiting, active, completed, failed, deferred, scheduled")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="at most this many per queue and state")
@click.option("--json", "as_json", is_flag=True)
def jobs(types: str, limit: int, as_json: bool, **flags: Any) -> None:
    """List jobs by state."""
    from harness import queue as q

    states = [t.strip() for t in types.split(",") if t.strip()]
    if bad := [t for t in states if t not in q.STATES]:
        raise click.BadParameter(f"{', '.join(bad)}; choose from {', '.join(q.STATES)}",
                                 param_hint="--types")
    rows = q.jobs(_queue_conn(flags), states, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"no {'/'.join(states)} jobs")
    else:
        import pandas as pd

        click.echo(pd.DataFrame(rows).fillna("").to_string(index=False))


@queue_group.command()
@connection_options
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="seconds to wait for the workers to exit")
def close(timeout: float, **flags: Any) -> None:
    """Stop every harness worker pool (running batches finish) and close connections.
    Refused while a run is active: cancel it first."""
    import time

    from harness import queue as q
    from harness.state import RunState

    conn = _queue_conn(flags)
    if holder := RunState(conn).holder():
        raise RunActive(f"run {holder.run_id} is active; `harness cancel` it first", holder)
    before = q.worker_count(conn)
    q.request_close(conn)
    deadline = time.monotonic() + timeout
    while (left := q.worker_count(conn)) and time.monotonic() < deadline:
        time.sleep(0.1)
    conn.close()
    click.echo(f"closed: {before - left} of {before} worker(s) stopped"
               + (f"; {left} still registered" if left else ""))
    if left:
        sys.exit(1)


if __name__ == "__main__":
    main()
