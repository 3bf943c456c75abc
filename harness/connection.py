"""Reaching Redis: fail fast and say why, and start a local server only when nobody named one.

A newcomer with ``redis-server`` on PATH but not running should still get a benchmark, so
when no Redis address was given at all (no REDIS_URL, REDIS_HOST or REDIS_PORT) and nothing
listens on 127.0.0.1:6379, the harness starts its own server there, in the data folder (no
persistence), and says how to stop it. Never otherwise: an address the user chose that does
not answer is an error (``REDIS_URL=redis://127.0.0.1:1/0`` once left a daemonized server
on port 1), and so is a server that answers but refuses us (a password, a database it does
not have): starting another one there only ended in a misleading timeout.

Every client the harness makes (:func:`redis_client`) waits a bounded time for everything:
``CONNECT_TIMEOUT_S`` to connect (a TLS handshake included), ``COMMAND_TIMEOUT_S`` for the
reply to a command, and a connection idle for ``HEALTH_CHECK_S`` is PINGed before it is used
again. A Redis that accepts but never answers (frozen with SIGSTOP, a ``rediss://`` URL
pointed at a plain server, a dead peer behind a live load balancer) is thus "does not
answer" within seconds, in one line, where it used to hang a command for minutes. Reads
that legitimately wait are told apart from commands, not given the commands' timeout:

* a blocking command (an RQ worker's ``BLPOP``/``BLMOVE`` waits up to its own timeout,
  405 s for an idle worker) is read with that timeout plus ``COMMAND_TIMEOUT_S``
  (:class:`TimedConnection`), so a worker's wait for a job is never cut short, and a frozen
  Redis still ends it; the worker keeps the command timeout for everything else (RQ would
  raise the whole connection's to 415 s: see ``HarnessWorker``);
* a pub/sub read (a worker's command channel, :mod:`harness.listener`) passes its own wait
  to ``get_message(timeout=...)``, which redis-py polls apart from the socket timeout.
"""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from harness.config import Settings, redact
from harness.errors import RedisUnavailable
from harness.paths import DATA_DIR, usable_dir

log = logging.getLogger("harness")
# How long a client waits for a TCP connection (and a TLS handshake) to Redis.
CONNECT_TIMEOUT_S = 2.0
# How long a client waits for the reply to one command before Redis counts as not answering.
# A reply to any command the harness sends takes milliseconds (the slowest, purging a
# million-order run's jobs, well under a second); this leaves room for a busy machine and a
# remote Redis, and keeps every API route's 503 within 5 s (measured 3.1 s, a log line's
# own timeout included).
COMMAND_TIMEOUT_S = 2.0
# A connection idle this long is PINGed before its next command (a dead peer shows then).
HEALTH_CHECK_S = 15
# Commands that block on the server up to a timeout given as their last argument (seconds;
# 0 waits for ever): their reply is read with that timeout, plus COMMAND_TIMEOUT_S.
BLOCKING_COMMANDS = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX"})


def blocking_wait(args: tuple[Any, ...]) -> float | None:
    """How long the server may hold the reply to command ``args``: None for a command that
    does not block, 0 for one that waits for ever, else its timeout in seconds."""
    if len(args) < 2:
        return None
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    if name.upper() not in BLOCKING_COMMANDS:
        return None
    try:
        return max(0.0, float(args[-1]))
    except (TypeError, ValueError):
        return None


class Timed:
    """Reads the reply to a blocking command with that command's own wait (plus the command
    timeout), and every other reply with the command timeout (``socket_timeout``).

    Only the socket's timeout is changed, for that one read, and put back: it works the
    same on every redis-py line the project allows and with either parser (hiredis or
    Python), which both read from the connection's socket."""

    _sock: Any
    socket_timeout: float | None
    _wait: float | None = None

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        super().send_command(*args, **kwargs)  # type: ignore[misc]
        # After sending: a health check's PING inside send_command reads its own reply.
        self._wait = blocking_wait(args)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        wait, self._wait = self._wait, None
        sock = self._sock
        if wait is None or sock is None:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        sock.settimeout(None if wait == 0 else wait + (self.socket_timeout or COMMAND_TIMEOUT_S))
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        finally:
            if self._sock is not None:  # not disconnected by a failed read
                self._sock.settimeout(self.socket_timeout)


class TimedConnection(Timed, Connection):
    """A TCP connection with :class:`Timed` reads."""


class TimedSSLConnection(Timed, SSLConnection):
    """A TLS connection (``rediss://``) with :class:`Timed` reads."""


class TimedUnixConnection(Timed, UnixDomainSocketConnection):
    """A Unix socket connection (``unix://``) with :class:`Timed` reads."""


CONNECTION_CLASSES: dict[str, type[Connection] | type[UnixDomainSocketConnection]] = {
    "redis": TimedConnection, "rediss": TimedSSLConnection, "unix": TimedUnixConnection}


def redis_client(url: str) -> Redis:
    """A client for ``url`` with the harness's timeouts (see the module's docstring); no
    connection is made yet. ValueError for a URL redis-py cannot parse."""
    scheme = urlsplit(url).scheme.lower()
    return Redis.from_url(
        url, connection_class=CONNECTION_CLASSES.get(scheme, TimedConnection),
        socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S)


def _ping(conn: Redis) -> Exception | None:
    try:
        conn.ping()
    except (RedisError, OSError) as exc:
        return exc
    return None


def connect_redis(settings: Settings, autostart: bool = True) -> Redis:
    """A live connection to the configured Redis; with ``autostart``, a local server started
    first when no address was given and nothing listens at the default one."""
    url = settings.redis_address
    try:
        conn = redis_client(url)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redact(url)}: {redact(str(exc))}") from None
    error = _ping(conn)
    if error is None:
        return conn
    if not (autostart and not settings.redis_given and _refused(error)):
        raise RedisUnavailable(_why(url, conn, error))
    port = int(conn.connection_pool.connection_kwargs.get("port", 6379))
    start_local_redis(port, settings.data_dir)
    error = _ping(conn)
    if error is not None:
        raise RedisUnavailable(f"started redis-server on port {port} but it does not answer: "
                               f"{redact(str(error))}")
    return conn


def _refused(error: Exception) -> bool:
    """Nothing listens there (ECONNREFUSED), as opposed to a server that refused us."""
    if isinstance(error, AuthenticationError):
        return False
    cause = error.__cause__ or error.__context__
    return isinstance(error, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError) \
        or f"Error {errno.ECONNREFUSED} connecting" in str(error)


def _why(url: str, conn: Redis, error: Exception) -> str:
    """One line saying what went wrong, as what it is (redacted)."""
    shown, reason = redact(url), redact(str(error))
    kwargs = conn.connection_pool.connection_kwargs
    if isinstance(error, AuthenticationError):
        if kwargs.get("password"):
            return f"Redis at {shown} refused the password (or user) in the URL: {reason}"
        return (f"Redis at {shown} requires a password; give it in REDIS_URL / --redis-url as "
                f"redis://:PASSWORD@host:port/db ({reason})")
    if isinstance(error, ResponseError) and "DB index is out of range" in str(error):
        return (f"Redis at {shown} has no database {kwargs.get('db', 0)} (DB index is out of "
                "range: the server has fewer `databases`)")
    if isinstance(error, ResponseError):
        return f"Redis at {shown} refused the connection: {reason}"
    return f"Redis at {shown} does not answer: {reason}"


def start_local_redis(port: int, data_dir: Path, timeout: float = 10.0) -> None:
    """Start ``redis-server`` on 127.0.0.1:port, daemonized, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            f"no Redis answers on 127.0.0.1:{port} and redis-server is not on PATH; "
            "install Redis or set REDIS_URL"
        )
    data_dir = usable_dir(Path(data_dir), DATA_DIR).resolve()
    pid_file, log_file = data_dir / "redis.pid", data_dir / "redis.log"
    log.info("no Redis answers on 127.0.0.1:%d and none was configured; starting a local "
             "redis-server there (log %s)", port, log_file)
    subprocess.run(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--save", "", "--appendonly", "no", "--daemonize", "yes",
         "--pidfile", str(pid_file), "--logfile", str(log_file)],
        check=True, capture_output=True,
    )
    probe = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + timeout
    while _ping(probe) is not None:
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"redis-server did not answer on port {port} within {timeout}s")
        time.sleep(0.05)
    pid = pid_file.read_text().strip() if pid_file.exists() else "?"
    log.warning("started a local redis-server on 127.0.0.1:%d (pid %s, pid file %s); it keeps "
                "running after this command: stop it with `redis-cli -p %d shutdown`",
                port, pid, pid_file, port)
