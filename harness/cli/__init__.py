"""The ``harness`` command: a thin layer over the Python API.

Every command reads the same settings (environment, then flags). Errors a user can cause
or fix (a bad value, an unreachable service, a run already active) end in one line on
stderr and a non-zero exit: 2 for bad input, 1 for everything else.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from harness import logs
from harness.cli import control, core, experiments, queue, results, serve
from harness.errors import HarnessError


class HarnessGroup(click.Group):
    """Turns the harness's own errors into one clear line and the exit code of their branch
    of the error tree (2 for bad input, 1 for everything else). A value click itself refuses
    (a choice not offered) is one line too, exit 2; a missing or unknown option keeps
    click's usage message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            click.echo(f"harness: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except click.BadParameter as exc:
            if isinstance(exc, click.MissingParameter):
                raise
            click.echo(f"harness: error: {exc.format_message()}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log what the harness does")
def main(verbose: bool) -> None:
    """Benchmark harness for a VIP-first order-processing pipeline (RQ + Redis + a store)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.RedactingFormatter(logs.FORMAT))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger(logs.LOGGER).setLevel(logging.INFO)  # for the log file, if one is on


for command in (core.run, core.resume, core.status, core.runs, core.worker, experiments.bench_command,
                experiments.sweep_command, experiments.report_command, results.export_command,
                results.compare_command, results.sweeps_command, control.cancel,
                control.retry_failed, control.reset, control.logs_command, control.health, queue.queue_group,
                serve.serve):
    main.add_command(command)
