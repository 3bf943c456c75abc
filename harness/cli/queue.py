"""Queue controls, the original's /queue/* routes: `harness queue pause|resume|clean|status|
jobs|close`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from harness import parsing
from harness.cli.options import Integer, Number, connection_options, settings_from


@click.group(name="queue")
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
@click.argument("state", metavar="STATE", type=click.Choice(["waiting", "completed", "failed",
                                                            "deferred", "scheduled", "all"]))
@click.option("--force", is_flag=True, help="clean waiting jobs even while a run is active")
def clean(state: str, force: bool, **flags: Any) -> None:
    """Delete every job in STATE from both queues (running jobs cannot be taken back)."""
    from harness.control import clean_queue

    removed = clean_queue(_queue_conn(flags), state, force=force)
    click.echo(f"removed {removed:,} {state} job(s)")


@queue_group.command(name="status")
@connection_options
@click.option("--json", "as_json", is_flag=True)
def queue_status(as_json: bool, **flags: Any) -> None:
    """Raw job counts per queue and state, and whether the queues are paused."""
    from harness import queue as q

    doc = q.status(_queue_conn(flags))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from harness.extras import require

    pd = require("pandas")

    click.echo(f"paused: {doc['paused']}; workers: {doc['workers']}")
    click.echo(pd.DataFrame(doc["counts"]).T.to_string())


@queue_group.command()
@connection_options
@click.option("-t", "--types", default="waiting,active", show_default=True,
              help="comma-separated states: waiting, active, completed, failed, deferred, "
                   "scheduled (or BullMQ's: wait, delayed, paused, prioritized)")
@click.option("--limit", type=Integer(parsing.JOBS_LIMIT), default=20, show_default=True,
              help="at most this many per queue and state")
@click.option("--json", "as_json", is_flag=True)
def jobs(types: str, limit: int, as_json: bool, **flags: Any) -> None:
    """List jobs by state."""
    from harness import queue as q

    states = parsing.named("-t/--types", types, lambda: q.parse_states(types))
    rows = q.jobs(_queue_conn(flags), states, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo(f"no {'/'.join(states)} jobs")
    else:
        from harness.extras import require

        pd = require("pandas")
        click.echo(pd.DataFrame(rows).fillna("").to_string(index=False))


@queue_group.command()
@connection_options
@click.option("--timeout", type=Number(parsing.CLOSE_TIMEOUT), default=15.0, show_default=True,
              help="seconds to wait for the workers to exit")
def close(timeout: float, **flags: Any) -> None:
    """Stop every harness worker pool (running batches finish) and close connections.
    Refused while a run is active: cancel it first."""
    from harness.control import close_workers

    conn = _queue_conn(flags)
    done = close_workers(conn, timeout)
    conn.close()
    click.echo(f"closed: {done.stopped} of {done.before} worker(s) stopped"
               + (f"; {done.left} still registered" if done.left else ""))
    if done.left:
        sys.exit(1)
