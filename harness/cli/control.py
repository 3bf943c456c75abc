"""Run control, the original's /pedidos/cancel, /reset, /logs and /health/queue:
`harness cancel`, `reset`, `logs` and `health`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from harness import logs, parsing
from harness.cli.options import Integer, connection_options, setting, settings_from
from harness.config import Settings, option_help
from harness.connection import RedisUnavailable


@click.command()
@connection_options
@click.option("--purge/--no-purge", default=True, show_default=True,
              help="remove the run's queued jobs")
@click.option("--remove-pending/--keep-pending", default=True, show_default=True,
              help="delete the orders not processed yet from the store")
@click.option("--reset-metrics", is_flag=True,
              help="also clear the live metrics (status shows IDLE; the run record stays)")
@click.option("--reset-logs", is_flag=True, help="also empty the log file and the lines kept in Redis")
@click.option("--timeout", "cancel_timeout_s", type=setting("cancel_timeout_s"),
              help=option_help("cancel_timeout_s"))
@click.option("--json", "as_json", is_flag=True, help="print the result and the run record as JSON")
def cancel(purge: bool, remove_pending: bool, reset_metrics: bool, reset_logs: bool,
           as_json: bool, **flags: Any) -> None:
    """Cancel the active run: nothing new starts, running batches stop at their next check,
    processed orders stay; the run is recorded ABORTED with its partial figures.

    The answer is the record's: exit 0 when the run was cancelled (or none was active), 3
    when it finished DONE (or ERROR) before the cancel took effect ("too late"), 1 when its
    record is not final yet."""
    from harness.control import CANCEL_TOO_LATE_EXIT
    from harness.control import cancel as cancel_run
    from harness.record import CancelInfo

    settings = settings_from(**flags)
    result = cancel_run(settings, purge=purge, remove_pending=remove_pending,
                        reset_metrics=reset_metrics, reset_logs=reset_logs)
    record = result.record
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(result.message)
    if result.cancelled and record is not None and not as_json:
        info = record.cancel or CancelInfo()
        click.echo(f"  during {info.phase or '?'}; last job stopped "
                   f"{info.last_job_stopped_ms} ms after the request; cancel took "
                   f"{result.elapsed_ms} ms")
        click.echo(f"  processed orders kept: {record.counts.processed}; pending orders "
                   f"removed: {info.removed_pending}")
    if result.too_late:
        sys.exit(CANCEL_TOO_LATE_EXIT)
    if result.run_id is not None and not result.cancelled:
        sys.exit(1)


@click.command("retry-failed")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def retry_failed(as_json: bool, **flags: Any) -> None:
    """Requeue the active run's dead-lettered batches (RQ's failed jobs), each with a fresh
    set of tries. For a run that has ended, use `harness resume`."""
    from harness.control import retry_failed as requeue

    requeued = requeue(settings_from(**flags))
    if as_json:
        click.echo(json.dumps({"requeued": requeued}))
    else:
        click.echo(f"requeued {requeued} dead-lettered batch(es)" if requeued
                   else "no dead-lettered batches; nothing changed")


@click.command()
@connection_options
@click.option("--all", "all_runs", is_flag=True, help="also delete the run history (process_runs)")
@click.option("--force", is_flag=True, help="cancel an active run first")
def reset(all_runs: bool, force: bool, **flags: Any) -> None:
    """Delete orders, queued jobs, live metrics and state; run history stays unless --all."""
    from harness.control import reset as reset_all

    done = reset_all(settings_from(**flags), all_runs=all_runs, force=force)
    click.echo(f"reset: {done['orders']:,} orders, {done['jobs']:,} jobs"
               + (f", {done['runs']:,} run records" if all_runs else "; run history kept"))


@click.command(name="logs")
@connection_options
@click.option("-n", "--lines", type=Integer(parsing.LOG_LINES), default=100, show_default=True)
@click.option("--log-file", type=setting("log_file"),
              help="read this log file instead of the lines kept in Redis")
@click.option("--file", "from_file", is_flag=True,
              help="read this host's log file (BACKEND_LOGS=true or HARNESS_LOG_FILE) instead")
def logs_command(lines: int, from_file: bool, **flags: Any) -> None:
    """Print the last lines the harness logged, every process on every host: Redis keeps
    the last 10,000 whether or not file logging is on."""
    from harness.connection import connect_redis

    settings = Settings.from_env(**flags)
    if from_file or flags.get("log_file") is not None:
        shown = logs.tail_log(settings, lines)
    else:
        shown = logs.recent_lines(connect_redis(settings, autostart=False), lines)
    for line in shown:
        click.echo(line)


@click.command()
@connection_options
@click.option("--stuck-after", "stuck_after_s", type=setting("stuck_after_s"),
              help=option_help("stuck_after_s"))
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
