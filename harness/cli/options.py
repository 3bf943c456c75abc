"""What every command shares: connection flags, settings from environment and flags, and one
click type per kind of value (integer, number, text, path, comma list, output file).

Every flag is read by a rule of :mod:`harness.parsing`, as the environment variables, the
notebook parameters and the HTTP API read the same value: click's own types call int() and
float(), which take ' 5', '1_000', '+4', '٣' and 'nan'. A refusal is one line naming the
flag and the value (``harness: error: -n/--quantity ' 5': quantity must be an integer,
...``), exit 2, before anything is written or started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from harness import logs, parsing
from harness.config import RULES, ConfigError, Settings, option_help, redact
from harness.parsing import Rule, named, shown


def flag_of(param: click.Parameter | None) -> str:
    """How a refusal names the flag: ``-n/--quantity``; an argument by its name."""
    if param is None:
        return "value"
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return param.human_readable_name


class Value(click.ParamType):
    """A flag read by a :mod:`harness.parsing` rule; a refusal is a ConfigError (one line,
    exit 2) naming the flag and the value. Defaults are checked the same way."""

    name = "value"

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return named(flag_of(param), value, lambda: self.rule.take(value))


class Integer(Value):
    """An integer within its rule's bounds: ASCII digits, an optional leading '-'."""

    name = "integer"


class Number(Value):
    """A finite number within its rule's bounds."""

    name = "number"


class Text(Value):
    """Text that holds something (not empty, not only spaces)."""

    name = "text"


class Folder(Value):
    """A path setting: a folder, or the log file."""

    name = "path"


class IntegerList(Value):
    """Comma-separated integers, each within the rule's bounds (``1,2,4``; spaces around
    the commas allowed)."""

    name = "list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        return named(flag_of(param), value, lambda: parsing.parse_list(value, self.rule))


class OutputFile(click.ParamType):
    """A file the command will write, checked before it starts any work (not empty, not a
    folder, under a folder that can be created, writable); a :class:`~pathlib.Path`."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return parsing.output_file(value, flag_of(param))


KINDS: dict[type[Rule], type[Value]] = {parsing.Integer: Integer, parsing.Number: Number,
                                        parsing.Text: Text, parsing.Folder: Folder}


def setting(name: str) -> Value:
    """The click type of setting ``name``: read as its environment variable is."""
    rule = RULES[name]
    return KINDS[type(rule)](rule)


def connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Flags that say where Redis and the store are; each overrides its env var."""
    options = [
        click.option("--mongo-uri", type=setting("mongo_uri"), help=option_help("mongo_uri")),
        click.option("--mongo-db", type=setting("mongo_db"), help=option_help("mongo_db")),
        click.option("--database-url", type=setting("database_url"), help=option_help("database_url")),
        click.option("--redis-url", type=setting("redis_url"), help=option_help("redis_url")),
        click.option("--data-dir", type=setting("data_dir"), help=option_help("data_dir")),
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
            raise ConfigError(f"{flag} {shown(redact(str(flags[exc.field])))}: {exc}",
                              exc.field) from None
        raise
    logs.configure(settings)
    return settings
