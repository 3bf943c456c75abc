"""Log lines kept in Redis: every process's, from any host, redacted, capped, and never in the
way of a run when Redis is gone."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from harness import logs
from harness.config import Settings


@pytest.fixture
def logger(settings: Settings) -> Iterator[logging.Logger]:
    """The harness logger with its handlers for the test's Redis (removed afterwards by
    conftest's autouse fixture)."""
    logs.configure(settings)
    yield logging.getLogger("harness.test")


def test_lines_name_their_host_and_process_are_redacted_and_capped(
    logger: logging.Logger, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger.info("run run=r1 mongo=mongodb://u:s3cret-pw@db:27017/x")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it failed")
    lines = logs.recent_lines(redis_conn, 100)
    assert "s3cret-pw" not in "\n".join(lines) and "mongodb://u:***@db:27017/x" in lines[0]
    assert f" harness.test[{socket.gethostname()}:{os.getpid()}] run run=r1" in lines[0]
    assert lines[1].endswith("it failed") and lines[-1] == "RuntimeError: boom"  # a line each

    count, new = logs.lines_since(redis_conn, 1)
    assert count == len(lines) and new == lines[1:]
    monkeypatch.setattr(logs, "KEEP_LINES", 5)
    for i in range(20):
        logger.info("line %d", i)
    kept = logs.recent_lines(redis_conn, 100)
    assert len(kept) == 5 and kept[-1].endswith("line 19")
    assert logs.clear_lines(redis_conn) == 5 and logs.recent_lines(redis_conn, 10) == []
    logger.info("after the clear")
    count_now, new = logs.lines_since(redis_conn, count + 20)  # a follower misses nothing
    assert count_now == count + 21 and len(new) == 1 and new[0].endswith("after the clear")


def test_a_line_with_redis_gone_is_dropped_at_once(unused_port: int, tmp_path: Path) -> None:
    settings = Settings.from_env(environ={}, redis_url=f"redis://127.0.0.1:{unused_port}/0",
                                 data_dir=tmp_path)
    logs.configure(settings)
    t0 = time.monotonic()
    for i in range(50):
        logging.getLogger("harness.test").warning("Redis gone, line %d", i)
    assert time.monotonic() - t0 < 2.0  # one failed try, then nothing for REDIS_RETRY_S


def test_a_worker_on_another_host_logs_into_the_same_list(settings: Settings, redis_conn: Redis) -> None:
    """A process on "host-b" (its own UTS namespace: another hostname) logs as a `harness
    worker` there would; its line lands beside this host's."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a second hostname")
    code = ("import logging; from harness import logs; from harness.config import Settings; "
            f"logs.configure(Settings.from_env(environ={{}}, redis_url={settings.redis_address!r})); "
            "logging.getLogger('harness.worker').warning('worker pool: from the other host')")
    done = subprocess.run([unshare, "--uts", "sh", "-c", 'hostname host-b && exec "$0" -c "$1"',
                           sys.executable, code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    logging.getLogger("harness.test").warning("from this host")  # not configured here: none
    lines = logs.recent_lines(redis_conn, 10)
    assert len(lines) == 1 and " harness.worker[host-b:" in lines[0], lines
    assert lines[0].endswith("worker pool: from the other host")
