"""What every command shares: connection flags, settings from environment and flags, strict
integers, and integer lists (``1,2,4``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from harness import logs
from harness.config import INTEGER_TEXT, ConfigError, Settings, option_help, redact

INTEGER_RULE = "ASCII digits only, with an optional leading '-' (no spaces, '_' or other scripts' digits)"


class AsciiDigits(click.ParamType):
    """Integer flags parsed as the environment variables are: click's own types call int(),
    which takes ' 5', '1_000' and '٣' (an Arabic-Indic 3). Put first in the bases."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not INTEGER_TEXT.fullmatch(value):
            self.fail(f"{value!r} is not a valid integer: {INTEGER_RULE}", param, ctx)
        return super().convert(value, param, ctx)


class StrictInt(AsciiDigits, click.types.IntParamType):
    """click's INT with :class:`AsciiDigits`' parsing."""


class StrictIntRange(AsciiDigits, click.IntRange):
    """click.IntRange with :class:`AsciiDigits`' parsing."""


INT = StrictInt()


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that say where Redis and the store are; each overrides its env var."""
    options = [
        click.option("--mongo-uri", help=option_help("mongo_uri")),
        click.option("--mongo-db", help=option_help("mongo_db")),
        click.option("--database-url", help=option_help("database_url")),
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
            value = flags[exc.field]
            shown = redact(str(value))
            if isinstance(value, str) and (not value.strip() or value != value.strip()):
                shown = repr(shown)  # '' or ' 5': quoted, or the value would not show
            raise ConfigError(f"{flag} {shown}: {exc}", exc.field) from None
        raise
    logs.configure(settings)
    return settings


def int_list(text: str, name: str) -> list[int]:
    """``"1,2,4"`` as [1, 2, 4]; a bad list is a usage error naming the flag. Spaces around
    the commas are allowed; each value is an integer as :class:`StrictInt` reads one."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not all(INTEGER_TEXT.fullmatch(v) for v in items):
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers "
                                 f"({INTEGER_RULE})", param_hint=name)
    values = [int(v) for v in items]
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: every value must be >= 1", param_hint=name)
    return values
