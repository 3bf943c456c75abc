"""What every command shares: connection flags, settings from environment and flags, and
integer lists (``1,2,4``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from harness import logs
from harness.config import ConfigError, Settings, option_help


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



def settings_from(**flags: Any) -> Settings:
    """Settings from the environment and flags; starts file logging when they ask for it.

    A bad value is reported with the flag that carried it (or the environment variable)."""
    try:
        settings = Settings.from_env(**flags)
    except ConfigError as exc:
        if exc.field is not None and flags.get(exc.field) is not None:
            ctx = click.get_current_context(silent=True)
            params = ctx.command.params if ctx is not None else []
            opts = next((p.opts for p in params if p.name == exc.field), None)
            flag = "/".join(opts) if opts else "--" + exc.field.replace("_", "-")
            raise ConfigError(f"{flag} {flags[exc.field]}: {exc}", exc.field) from None
        raise
    logs.configure(settings)
    return settings


def int_list(text: str, name: str) -> list[int]:
    """``"1,2,4"`` as [1, 2, 4]; a bad list is a usage error naming the flag."""
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers",
                                 param_hint=name) from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: every value must be >= 1", param_hint=name)
    return values
