"""One parser per kind of value, for every door a value comes in by.

A value reaches the harness through four doors: a command-line flag, an environment
variable, a notebook parameter and an HTTP query parameter. What counts as an integer, a
number, text, a comma-separated list or an output file is decided here, once, so that the
same value gets the same verdict and the same message at every door; each door only adds
where the value came from (``-n/--quantity ' 5': ...``, ``HARNESS_QUANTITY=' 5': ...``,
``notebook parameter quantity=' 5': ...``, ``quantity=' 5': ...``), and a refusal is a
:class:`~harness.errors.ConfigError`: exit 2, HTTP 400.

Text (flags, variables, query parameters) is *parsed*: :meth:`Integer.parse` and the
others. A Python value (a notebook parameter, an argument of a library call) is *checked*:
:meth:`Integer.check` and the others take values of their own type only, so ``5.0`` is not
an integer and ``None`` is not a value. Every integer has bounds (no 20-digit number
reaches SQLite or Redis), and no number is NaN or infinite.

The rules of the settings themselves are built from :class:`harness.config.Settings` and its
ranges (:data:`harness.config.RULES`); the rules of the other values commands and routes
take (how many runs, log lines, a timeout) are at the end of this module, one per value,
shared by the command and the route that take it.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import ConfigError

T = TypeVar("T")

# An integer as the harness reads one: ASCII digits, an optional leading minus. int() also
# takes ' 5', '1_000', '+4' and Arabic-Indic or fullwidth digits, which a typo or a
# copy-paste can produce.
INTEGER_TEXT = re.compile(r"-?[0-9]+")
INTEGER_RULE = ("ASCII digits with an optional leading '-' (no spaces, '_', '+', decimal point "
                "or other scripts' digits)")
# A number: float()'s syntax without what it also takes (spaces, '_', '+', other scripts'
# digits, nan, inf).
NUMBER_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
NUMBER_RULE = ("ASCII digits with an optional leading '-', decimal point and exponent (no "
               "spaces, '_', '+' or other scripts' digits)")
# No bound of any integer has more digits than this (2**63 - 1 has 19): longer text is out
# of range without being converted (int() refuses more than 4,300 digits).
MAX_DIGITS = 20
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def blank(text: str) -> str | None:
    """What is wrong with text that holds no value ('' or only spaces), else None."""
    if text == "":
        return "an empty value"
    if not text.strip():
        return "only spaces"
    return None


def shown(value: Any) -> str:
    """A value as a refusal shows it after the flag: quoted when its spaces would not show."""
    if isinstance(value, str) and (not value.strip() or value != value.strip()):
        return repr(value)
    return str(value)


class Rule:
    """How one kind of value is parsed from text and checked as a Python value."""

    name: str

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def take(self, value: Any) -> Any:
        """Text parsed, anything else checked."""
        return self.parse(value) if isinstance(value, str) else self.check(value)

    def refuse(self, message: str) -> ConfigError:
        return ConfigError(f"{self.name} {message}", self.name)


@dataclass(frozen=True)
class Integer(Rule):
    """An integer from ``low`` to ``high``."""

    name: str
    low: int
    high: int

    def parse(self, text: str) -> int:
        if not isinstance(text, str):
            raise self.refuse(f"must be an integer, got {text!r}")
        if empty := blank(text):
            raise self.refuse(f"must be an integer, got {empty}")
        if not INTEGER_TEXT.fullmatch(text):
            raise self.refuse(f"must be an integer, got {text!r}: {INTEGER_RULE}")
        digits = len(text.lstrip("-"))
        if digits > MAX_DIGITS:
            side = f">= {self.low}" if text.startswith("-") else f"<= {self.high:,}"
            raise self.refuse(f"must be {side}, got a {digits}-digit number")
        return self.check(int(text))

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.refuse(f"must be an integer, got {value!r}")
        if value < self.low:
            raise self.refuse(f"must be >= {self.low}, got {value}")
        if value > self.high:
            raise self.refuse(f"must be <= {self.high:,}, got {value:,}")
        return value


@dataclass(frozen=True)
class Number(Rule):
    """A finite number from ``low`` to ``high`` (``inf``: no upper bound); ``low_open`` and
    ``high_open`` leave the bound itself out. ``unit`` follows the bounds in messages."""

    name: str
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    unit: str = ""

    def parse(self, text: str) -> float:
        if not isinstance(text, str):
            raise self.refuse(f"must be a number, got {text!r}")
        if empty := blank(text):
            raise self.refuse(f"must be a number, got {empty}")
        if text.strip().lstrip("+-").lower() in ("nan", "inf", "infinity"):
            raise self.refuse(f"must be a finite number, got {text!r}")
        if not NUMBER_TEXT.fullmatch(text):
            raise self.refuse(f"must be a number, got {text!r}: {NUMBER_RULE}")
        number = float(text)
        if not math.isfinite(number):  # '1e999'
            raise self.refuse(f"must be a finite number, got {text!r}")
        return self.check(number)

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.refuse(f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise self.refuse(f"must be a finite number, got {value}")
        below = value < self.low or (self.low_open and value == self.low)
        above = value > self.high or (self.high_open and value == self.high)
        if below or above:
            raise self.refuse(f"must be {self.bounds()}, got {value}")
        return number

    def bounds(self) -> str:
        low = f"above {self.low:g}" if self.low_open else f"at least {self.low:g}"
        if math.isinf(self.high):
            return low + self.unit
        high = f"below {self.high:g}" if self.high_open else f"at most {self.high:g}"
        return f"{low} and {high}{self.unit}"


@dataclass(frozen=True)
class Text(Rule):
    """Text that holds something: not empty, not only spaces; taken without the spaces
    around it."""

    name: str
    kind: str = "text"

    def parse(self, text: str) -> str:
        if not isinstance(text, str):
            raise self.refuse(f"must be {self.kind}, got {text!r}")
        if empty := blank(text):
            raise self.refuse(f"must be {self.kind}, got {empty}")
        return text.strip()

    def check(self, value: Any) -> str:
        return self.parse(value)


@dataclass(frozen=True)
class Folder(Rule):
    """A path setting (a folder, or the log file): not empty, which Path() would read as
    the current folder (the database landed there)."""

    name: str

    def parse(self, text: str) -> Path:
        if not isinstance(text, str):
            raise self.refuse(f"must name a folder or file, got {text!r}")
        if empty := blank(text):
            raise self.refuse(f"must name a folder or file, got {'an empty path' if text == '' else empty}")
        return Path(text.strip())

    def check(self, value: Any) -> Path:
        return self.parse(value) if isinstance(value, str) else Path(value)


@dataclass(frozen=True)
class Flag(Rule):
    """true or false: 1/true/yes/on or 0/false/no/off, in any case."""

    name: str

    def parse(self, text: str) -> bool:
        if not isinstance(text, str):
            raise self.refuse(f"must be true or false, got {text!r}")
        if empty := blank(text):
            raise self.refuse(f"must be true or false, got {empty}")
        word = text.strip().lower()
        if word in TRUE or word in FALSE:
            return word in TRUE
        raise self.refuse(f"must be true or false, got {text!r}")

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.refuse(f"must be true or false, got {value!r}")
        return value


def items(text: str, name: str) -> list[str]:
    """A comma-separated list's entries, without the spaces around each: ``'500, 1000'``.
    Refused: no entry at all, and an empty entry (``'500,,1000'``, ``'500,'``)."""
    if not isinstance(text, str):
        raise ConfigError(f"{name} must be a comma-separated list, got {text!r}", name)
    if empty := blank(text):
        raise ConfigError(f"{name} must be a comma-separated list, got {empty}", name)
    entries = [entry.strip() for entry in text.split(",")]
    if "" in entries:
        raise ConfigError(f"{name} has an empty entry in its comma-separated list {text!r}", name)
    return entries


def parse_list(text: str, rule: Rule) -> list[Any]:
    """A comma-separated list, each entry parsed by ``rule``."""
    return [rule.parse(entry) for entry in items(text, rule.name)]


def output_file(text: str, source: str) -> Path:
    """A file the harness will write, checked before any work: named (not empty), not a
    folder, under a folder that exists or can be created, and writable in fact: the file
    opened for appending if it exists, else a file created and removed in the nearest
    folder that exists (as root, os.access() says yes to /proc and to read-only file
    systems). ``source`` names the flag or parameter in the message. Nothing is left behind;
    a file that fails only as it is written (``/dev/full``) is :func:`write_output`'s."""
    from harness.paths import check_output_file

    if not isinstance(text, str | Path):
        raise ConfigError(f"{source} {text!r}: must name a file")
    if isinstance(text, str) and (empty := blank(text)):
        raise ConfigError(f"{source} {text!r}: must name a file, got "
                          f"{'an empty path' if text == '' else empty}")
    path = check_output_file(Path(text), source)
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
        else:
            folder = next(p for p in path.absolute().parents if p.exists())
            handle, probe = tempfile.mkstemp(prefix=".harness-write-check-", dir=folder)
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{source} {str(path)!r}: cannot be written: {exc.strerror or exc}") from None
    return path


def write_output(path: Path, text: str, source: str) -> Path:
    """Write ``text`` to the file ``path`` (its folder created); a file that cannot be
    written after all (``/dev/full``: no space left) is one line naming ``source``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"{source} {str(path)!r}: cannot be written: "
                          f"{exc.strerror or exc}") from None
    return path


def named(source: str, value: Any, call: Callable[[], T], sep: str = " ") -> T:
    """``call()``, a refusal naming ``source`` and the value it gave, as a flag's refusal
    reads (``-n/--quantity ' 5': quantity must be an integer, ...``)."""
    try:
        return call()
    except ConfigError as exc:
        raise ConfigError(f"{source}{sep}{shown(value)}: {exc}", exc.field) from None


# -- the values commands and routes take besides settings -------------------------------------
# Each is read the same at the flag and at the query parameter that take it.

RUN_COUNT = (1, 1_000_000)
LIMIT = Integer("limit", *RUN_COUNT)  # `harness runs --limit`, GET /pedidos/runs?limit
LATEST = Integer("latest", *RUN_COUNT)  # export/report --latest, report.ipynb's latest
JOBS_LIMIT = Integer("limit", 1, 1_000)  # `harness queue jobs --limit`, GET .../queue/jobs?limit
# `harness logs -n`, GET /pedidos/logs?lines: as many as Redis keeps (logs.KEEP_LINES)
LOG_LINES = Integer("lines", 1, 10_000)
INTERVAL_MS = Integer("intervalMs", 50, 60_000)  # the streams' intervalMs
CLOSE_TIMEOUT = Number("timeout", 0, 300, low_open=True, unit=" s")  # queue close
REPEATS = Integer("repeats", 1, 1_000)  # sweep --repeats, sweep.ipynb's repeats
WARMUP = Integer("warmup", 0, 1_000)  # sweep --warmup
FACTOR = Number("factor", 1, low_open=True)  # report/compare --factor, report.ipynb's factor
ALPHA = Number("alpha", 0, 1, low_open=True, high_open=True)  # ... --alpha
SWEEP_ID = Text("sweep id")  # export/report --sweep (checked as a sweep id too)
BASELINE = Text("baseline")  # a sweep id or an exported file
CANDIDATE = Text("candidate")
