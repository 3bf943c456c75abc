"""Log lines: one event per line as ``key=value`` pairs, redacted, optionally to a file.

The original service logged phases and progress to its console and, with BACKEND_LOGS, to a
file its /logs route served; ``harness logs`` plays that route. Lines are logfmt so that
``grep phase=`` or a log shipper can read them without a parser of ours.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import resource
import sys
from collections import deque
from pathlib import Path
from typing import Any

from harness import paths
from harness.config import Settings, redact
from harness.errors import ConfigError, LogFileMissing

LOGGER = "harness"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MAX_BYTES = 20 * 1024 * 1024  # one file this size, plus BACKUPS older ones
BACKUPS = 3


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
    """The last ``lines`` lines of the log file (redacted again: the file may predate us)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [redact(line.rstrip("\n")) for line in deque(f, maxlen=lines)]
    except IsADirectoryError:
        raise ConfigError(f"log file {str(path)!r} is a folder; name a file") from None


def rss_mb() -> float:
    """This process's resident memory now (peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * resource.getpagesize() / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
