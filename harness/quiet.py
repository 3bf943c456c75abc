"""Expected failures in workers and their pool: one log line each, not a traceback.

Redis going away, or the store failing, are events an operator must see, once, in one
line; RQ and multiprocessing print them as tracebacks. Measured before this module, a Redis
killed under a 2-worker ``harness worker`` gave 3 tracebacks and ~100 lines within 15 s
(the pool's own loop died on a ConnectionError, then each worker's shutdown failed to
unregister), and a worker stopped while starting printed a KeyboardInterrupt traceback.

* :class:`QuietLogFilter`, on RQ's loggers: a record carrying an expected error loses its
  traceback and gains the (redacted) error as one line; RQ's "could not connect to Redis
  instance ... retrying" line, repeated every 1-2 s per worker for as long as Redis is away,
  is shown once per worker per ``REPEAT_EVERY_S``.
* :class:`QuietWorker`, mixed into the harness's worker: a failing job logs one line (RQ's
  job-failure record, kept for dead letters, still holds the traceback); stop signals are
  held from the very start (a signal in RQ's start-up was a KeyboardInterrupt traceback);
  a stop request while Redis is unreachable stops the worker (RQ's retry loop swallowed it);
  an expected error escaping RQ (unregistering on the way out) ends the worker with one line.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import StopRequested

from harness.config import redact
from harness.errors import HarnessError, StoreError

# What a worker or pool meets when a service goes away: logged in one line.
EXPECTED: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, StoreError)
# What may stop a pool as it starts (Redis unreachable, a bad setting): one line too.
STOPS_A_POOL: tuple[type[BaseException], ...] = (HarnessError, *EXPECTED)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
REPEAT_EVERY_S = 60.0
RQ_RETRY_LINE = "could not connect to Redis instance"
log = logging.getLogger("harness.worker")


def describe(exc: object) -> str:
    """``Type: message``, one line, redacted."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, BaseException):
        return redact(text)
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class QuietLogFilter(logging.Filter):
    """See the module docstring; install with :func:`install`."""

    def __init__(self) -> None:
        super().__init__()
        self._last_retry_line: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if RQ_RETRY_LINE in str(record.msg):
            who = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
            now = time.monotonic()
            if now - self._last_retry_line.get(who, -REPEAT_EVERY_S) < REPEAT_EVERY_S:
                return False
            self._last_retry_line[who] = now
            record.msg = "Worker %s: Redis unreachable (%s); retrying quietly"
            record.args = (who, describe(record.args[1]) if isinstance(record.args, tuple)
                           and len(record.args) > 1 else "")
            return True
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED):
            record.msg = f"{record.getMessage()}: {describe(record.exc_info[1])}"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


def install(*loggers: str) -> None:
    """Put one :class:`QuietLogFilter` on each named logger (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietLogFilter) for f in logger.filters):
            logger.addFilter(QuietLogFilter())


class QuietWorker:
    """Mixed in before RQ's worker class; see the module docstring."""

    name: str
    _signals_held: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # released in RQ's loop
        self._signals_held = True
        try:
            super().__init__(*args, **kwargs)
        except EXPECTED as exc:
            log.warning("a worker could not start: %s", describe(exc))
            raise SystemExit(1) from None

    def work(self, *args: Any, **kwargs: Any) -> bool:
        try:
            return bool(super().work(*args, **kwargs))  # type: ignore[misc]
        except EXPECTED as exc:
            # At start-up (HarnessWorker.bootstrap unregisters it) or on the way out (where
            # unregistering may be what failed).
            log.warning("worker %s stopped: %s", self.name, describe(exc))
            return False
        except KeyboardInterrupt:
            return False

    def request_stop(self, signum: Any, frame: Any) -> None:
        try:
            super().request_stop(signum, frame)  # type: ignore[misc]
        except EXPECTED:  # Redis is gone: no job can finish or commit; stop now
            raise StopRequested() from None

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        error = exc_info[1] if len(exc_info) > 1 else None
        if not isinstance(error, EXPECTED):
            super().handle_exception(job, *exc_info)  # type: ignore[misc]
            return
        log.warning("worker %s: job %s failed: %s", self.name, job.id, describe(error))
        from rq.job_lifecycle import call_exception_handlers

        call_exception_handlers(self._exc_handlers, job, *exc_info)  # type: ignore[attr-defined]
