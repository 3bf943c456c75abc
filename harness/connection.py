"""Reaching Redis: fail fast when a remote server is down, start one when a local one is.

A newcomer with ``redis-server`` on PATH but not running should still get a benchmark, so
for a local address the harness starts its own server in the data folder (no persistence)
and says so. A remote address that does not answer is an error: starting a server
elsewhere would silently measure a different machine.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from harness.config import Settings, redact
from harness.errors import RedisUnavailable
from harness.paths import DATA_DIR, usable_dir

log = logging.getLogger("harness")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


def _ping(conn: Redis) -> Exception | None:
    try:
        conn.ping()
    except (RedisError, OSError) as exc:
        return exc
    return None


def connect_redis(settings: Settings, autostart: bool = True) -> Redis:
    """A live connection to the configured Redis, starting a local server if allowed."""
    url = settings.redis_address
    try:
        conn = Redis.from_url(url, socket_connect_timeout=2, health_check_interval=30)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redact(url)}: {exc}") from None
    error = _ping(conn)
    if error is None:
        return conn
    kwargs = conn.connection_pool.connection_kwargs
    host, port = kwargs.get("host"), int(kwargs.get("port", 6379))
    if not autostart or host not in LOCAL_HOSTS or kwargs.get("password"):
        raise RedisUnavailable(f"Redis at {redact(url)} does not answer: {redact(str(error))}")
    start_local_redis(port, settings.data_dir)
    error = _ping(conn)
    if error is not None:
        raise RedisUnavailable(f"started redis-server on port {port} but it does not answer: {error}")
    return conn


def start_local_redis(port: int, data_dir: Path, timeout: float = 10.0) -> None:
    """Start ``redis-server`` on 127.0.0.1:port, daemonized, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            f"no Redis answers on 127.0.0.1:{port} and redis-server is not on PATH; "
            "install Redis or set REDIS_URL"
        )
    data_dir = usable_dir(Path(data_dir), DATA_DIR).resolve()
    log.warning("no Redis on 127.0.0.1:%d; starting a local redis-server (logs in %s)",
                port, data_dir / "redis.log")
    subprocess.run(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--save", "", "--appendonly", "no", "--daemonize", "yes",
         "--pidfile", str(data_dir / "redis.pid"), "--logfile", str(data_dir / "redis.log")],
        check=True, capture_output=True,
    )
    probe = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while _ping(probe) is not None:
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"redis-server did not answer on port {port} within {timeout}s")
        time.sleep(0.05)
