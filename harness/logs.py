"""Log lines: one event per line as ``key=value`` pairs, redacted; kept in Redis, and
optionally in a file.

The original service logged phases and progress to its console and, with BACKEND_LOGS, to a
file its /logs route served; ``harness logs`` plays that route. Lines are logfmt so that
``grep phase=`` or a log shipper can read them without a parser of ours.

Every process that logs through the ``harness`` logger (the coordinator, its workers, a
``harness worker`` on another host, a control command) also appends its lines to one capped
list in Redis (the last KEEP_LINES lines), so ``GET /pedidos/logs``, ``harness logs`` and the
log stream show every host's lines with file logging off. Each Redis line names its host and
process (``harness.worker[host-b:4121]``). A line that cannot reach Redis is dropped (and
Redis is left alone for a few seconds): logging never stops a run.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import resource
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from harness import paths
from harness.bounds import MAX_LOG_LINE, MAX_TAIL_BYTES, cut_line
from harness.config import Settings, redact
from harness.errors import ConfigError, LogFileMissing

LOGGER = "harness"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MAX_BYTES = 20 * 1024 * 1024  # one file this size, plus BACKUPS older ones
BACKUPS = 3
# The log lines kept in Redis: a list capped at KEEP_LINES, and how many lines were ever
# appended (a follower's cursor; clearing the list keeps it, so a follower misses nothing
# written after a clear; it starts again at 0 only if Redis lost it).
LOG_KEY = "harness:logs"
LOG_COUNT_KEY = "harness:logs:count"
KEEP_LINES = 10_000
REDIS_FORMAT = "%(asctime)s %(levelname)s %(name)s[{host}:%(process)d] %(message)s"
REDIS_RETRY_S = 5.0  # after a failed write, lines are dropped this long
# KEYS: list, count. ARGV: keep, lines... Returns the count after the append.
APPEND = """
redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
return redis.call('INCRBY', KEYS[2], #ARGV - 1)
"""
# Lines read back are cut in Redis, before they travel, to MAX_LOG_LINE bytes (the handler
# cuts what it writes; a line put there by anything else, 100 MB of it, read by ten clients
# took a server to 1.27 GB). A longer line found is also replaced in the list by its cut
# form, so that only the first reader pays for reading it. Lua, shared by the scripts below:
# cut(key, lines, most), where lines are the list's last #lines; a cut line, its mark
# included, is at most ``most`` bytes, so it is never cut again.
CUT = """
local function cut(key, lines, most)
  for i = 1, #lines do
    local n = #lines[i]
    if n > most then
      lines[i] = string.sub(lines[i], 1, most - 48) .. ' [line cut: ' .. n .. ' bytes]'
      redis.call('LSET', key, i - #lines - 1, lines[i])
    end
  end
  return lines
end
"""
# KEYS: list. ARGV: how many of the newest lines, most bytes a line.
RECENT = CUT + """
return cut(KEYS[1], redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1), tonumber(ARGV[2]))
"""
# KEYS: list, count. ARGV: the count a follower has seen, most lines to return, most bytes
# a line. Returns {count now, lines since}; all the list holds when it was cleared meanwhile.
SINCE = CUT + """
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
local seen = tonumber(ARGV[1])
local new = count - seen
if seen > count then new = count end
new = math.min(new, tonumber(ARGV[2]))
if new <= 0 then return {count, {}} end
return {count, cut(KEYS[1], redis.call('LRANGE', KEYS[1], -new, -1), tonumber(ARGV[3]))}
"""


class RedactingFormatter(logging.Formatter):
    """Every line, tracebacks included, with connection-string passwords masked: an
    exception message may quote a URI."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """The log file. A write that fails (a full disk; ``HARNESS_LOG_FILE=/dev/full``) is
    reported once, in one line on stderr, and the lines it cannot write are dropped: logging's
    own handler printed a "--- Logging error ---" traceback for every record (7 during one
    1,000-order run), and a log file must never stop a run."""

    def __init__(self, path: Path, source: str) -> None:
        super().__init__(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        self.source = source
        self.failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        self._report(sys.exc_info()[1])

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self._report(exc)

    def close(self) -> None:
        try:
            super().close()  # closing the file flushes what it still buffers
        except OSError as exc:
            self._report(exc)

    def _report(self, error: BaseException | None) -> None:
        if self.failed:
            return
        self.failed = True
        with contextlib.suppress(OSError, ValueError):  # stderr gone too: nothing left to tell
            sys.stderr.write(f"harness: warning: cannot write the log file {self.baseFilename} "
                             f"({self.source}): {redact(str(error))}; its lines are dropped\n")


class RedisLogHandler(logging.Handler):
    """Appends each record's lines (redacted, naming host and process) to the capped list
    in Redis: one round trip per record, with short timeouts. A failed write drops the
    record and the lines of the next REDIS_RETRY_S seconds: a run never waits on its logs."""

    def __init__(self, url: str) -> None:
        super().__init__(logging.INFO)
        self.url = url
        self.setFormatter(RedactingFormatter(REDIS_FORMAT.format(host=socket.gethostname())))
        self._conn: Redis | None = None
        self._down_until = 0.0

    def _client(self) -> Redis:
        if self._conn is None:  # made on first use; redis-py reconnects after a fork
            self._conn = Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        return self._conn

    def emit(self, record: logging.LogRecord) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            lines = [cut_line(line) for line in self.format(record).splitlines()] or [""]
            self._client().eval(APPEND, 2, LOG_KEY, LOG_COUNT_KEY, KEEP_LINES, *lines)
        except (RedisError, OSError, ValueError):
            self._down_until = time.monotonic() + REDIS_RETRY_S

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(RedisError, OSError):
                self._conn.close()
        super().close()


def event(name: str, **fields: Any) -> str:
    """``name k=v k=v``; values with spaces or quotes are quoted."""
    parts = [name]
    for key, value in fields.items():
        if value is None:
            continue
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


def configure(settings: Settings) -> Path | None:
    """Send the harness's INFO lines to the log file if the settings ask for one.

    Idempotent, so the CLI and the Python API (a notebook) may both call it. Returns the
    file in use. A path that cannot be a log file (a folder, under a file, in a folder that
    cannot be created, not writable) is a ConfigError naming it and its variable.
    """
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)  # handlers decide what they show; stderr stays quiet
    _to_redis(logger, settings.redis_address)
    given = settings.log_path
    if given is None:
        return None
    path = given.resolve()
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return path
    if settings.log_file is None:  # BACKEND_LOGS: harness.log in the data folder
        source = f"{paths.DATA_DIR} (BACKEND_LOGS=true writes harness.log there)"
        paths.usable_dir(settings.data_dir, source)
    else:
        source = f"{paths.LOG_FILE} {str(given)!r}"
        if path.is_dir():
            raise ConfigError(f"{source}: is a folder; name a file")
        if (problem := paths.folder_problem(path.parent)) is not None:
            raise ConfigError(f"{source}: {problem}")
    try:
        handler = LogFileHandler(path, source)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot open {str(path)!r} for writing: "
                          f"{exc.strerror or exc}") from None
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    return path


class LastResort(logging.StreamHandler):
    """Python's last resort, kept: WARNING lines to stderr when no other handler would show
    them (a library call from a script or a notebook, where nothing configured logging).

    Python prints such lines only when a logger chain has no handler at all; the Redis
    handler on this logger would silence them, and a paused coordinator's one line ("no
    longer owns the store ... nothing was written") went nowhere but Redis.
    """

    def __init__(self) -> None:
        super().__init__()  # sys.stderr, looked up per line (pytest and notebooks swap it)
        self.setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return  # the root shows it (the CLI's handler, a user's basicConfig)
        if any(not isinstance(h, RedisLogHandler | LastResort) for h in logging.getLogger(LOGGER).handlers):
            return  # a log file takes it, as before the Redis handler
        self.stream = sys.stderr
        super().emit(record)


def _to_redis(logger: logging.Logger, url: str) -> None:
    """One RedisLogHandler on ``logger``, for ``url`` (a notebook's next run may name
    another Redis: the old handler goes)."""
    for handler in logger.handlers[:]:
        if isinstance(handler, RedisLogHandler):
            if handler.url == url:
                return
            logger.removeHandler(handler)
            handler.close()
    logger.addHandler(RedisLogHandler(url))
    if not any(isinstance(h, LastResort) for h in logger.handlers):
        logger.addHandler(LastResort())


def recent_lines(conn: Redis, lines: int) -> list[str]:
    """The last ``lines`` lines kept in Redis, oldest first (redacted again), each cut to
    MAX_LOG_LINE bytes in Redis."""
    return [redact(_text(line)) for line in conn.eval(RECENT, 1, LOG_KEY, lines, MAX_LOG_LINE)]


def lines_since(conn: Redis, seen: int, most: int = KEEP_LINES) -> tuple[int, list[str]]:
    """The lines appended since a follower saw ``seen`` of them, at most ``most`` (the
    newest), and the count now; all the list holds when Redis lost the count."""
    count, new = conn.eval(SINCE, 2, LOG_KEY, LOG_COUNT_KEY, seen, most, MAX_LOG_LINE)
    return int(count), [redact(_text(line)) for line in new]


def clear_lines(conn: Redis) -> int:
    """Forget the lines kept in Redis (``resetLogs``); return how many there were."""
    pipe = conn.pipeline()
    pipe.llen(LOG_KEY)
    pipe.delete(LOG_KEY)
    return int(pipe.execute()[0])


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def log_file(settings: Settings) -> Path:
    """The log file runs write, or would write by default (the data folder's harness.log,
    for runs started with BACKEND_LOGS=true elsewhere); LogFileMissing when there is none."""
    path = settings.log_path or settings.data_dir / "harness.log"
    if not path.exists():
        raise LogFileMissing(f"no log file at {path}; set BACKEND_LOGS=true (or "
                             "HARNESS_LOG_FILE) for runs to write one")
    return path


def tail_log(settings: Settings, lines: int) -> list[str]:
    """The last ``lines`` lines of the log file (see :func:`log_file`)."""
    return tail(log_file(settings), lines)


def truncate_log(settings: Settings) -> bool:
    """Empty the log file, if there is one; return whether there was. Writers append, so a
    run writing meanwhile goes on at the new end."""
    try:
        path = log_file(settings)
    except LogFileMissing:
        return False
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


class LogFollower:
    """New lines of the log file since the last :meth:`poll`, as ``tail -F`` gives them:
    only complete lines, redacted; from the start again when the file was truncated (a
    cancel with resetLogs) or replaced (rotation)."""

    def __init__(self, path: Path, from_end: bool = True) -> None:
        self.path = path
        self._offset = path.stat().st_size if from_end and path.exists() else 0
        self._inode = path.stat().st_ino if path.exists() else None
        self._partial = b""

    def poll(self, max_bytes: int = 1 << 20) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset, self._partial = stat.st_ino, 0, b""
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(max_bytes)
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [redact(line.decode("utf-8", "replace")) for line in complete]


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of the log file (redacted again: the file may predate us),
    read from its last MAX_TAIL_BYTES only and each cut to MAX_LOG_LINE bytes: memory and
    time are bounded whatever the file holds (a 100 MB line, /dev/zero as the log file)."""
    if path.is_dir():
        raise ConfigError(f"log file {str(path)!r} is a folder; name a file")
    if not path.is_file():
        raise ConfigError(f"log file {str(path)!r} is not a regular file")
    kept: deque[bytes] = deque(maxlen=lines)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        start = max(0, size - MAX_TAIL_BYTES)
        f.seek(start)
        # A first line begun before ``start`` shows that it was.
        line, whole = bytearray(b"[line begun earlier] " if start else b""), 0
        while chunk := f.read(min(1 << 20, size - f.tell())):
            *ends, rest = chunk.split(b"\n")
            for piece in ends:
                _grow(line, piece)
                kept.append(_mark(bytes(line), whole + len(piece)))
                line, whole = bytearray(), 0
            _grow(line, rest)
            whole += len(rest)
        if line:
            kept.append(_mark(bytes(line), whole))
    return [redact(text.decode("utf-8", "replace")) for text in kept]


def _grow(line: bytearray, piece: bytes) -> None:
    """Add to a line read back what still fits in it (MAX_LOG_LINE bytes, its mark included)."""
    room = MAX_LOG_LINE - 48 - len(line)
    if room > 0:
        line += piece[:room]


def _mark(line: bytes, whole: int) -> bytes:
    return line if whole <= MAX_LOG_LINE - 48 else line + f" [line cut: {whole} bytes]".encode()


def rss_mb() -> float:
    """This process's resident memory now (peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * resource.getpagesize() / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
