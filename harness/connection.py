"""Reaching Redis: fail fast and say why, and start a local server only when nobody named one.

A newcomer with ``redis-server`` on PATH but not running should still get a benchmark, so
when no Redis address was given at all (no REDIS_URL, REDIS_HOST or REDIS_PORT) and nothing
listens on 127.0.0.1:6379, the harness starts its own server there, in the data folder (no
persistence), and says how to stop it. Never otherwise: an address the user chose that does
not answer is an error (``REDIS_URL=redis://127.0.0.1:1/0`` once left a daemonized server
on port 1), and so is a server that answers but refuses us (a password, a database it does
not have): starting another one there only ended in a misleading timeout.
"""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from harness.config import Settings, redact
from harness.errors import RedisUnavailable
from harness.paths import DATA_DIR, usable_dir

log = logging.getLogger("harness")


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
        conn = Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
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
    probe = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while _ping(probe) is not None:
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"redis-server did not answer on port {port} within {timeout}s")
        time.sleep(0.05)
    pid = pid_file.read_text().strip() if pid_file.exists() else "?"
    log.warning("started a local redis-server on 127.0.0.1:%d (pid %s, pid file %s); it keeps "
                "running after this command: stop it with `redis-cli -p %d shutdown`",
                port, pid, pid_file, port)
