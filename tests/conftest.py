"""Shared fixtures: a real redis-server per test session on a free port, settings pointing
at it, and the store backends the contract suite runs over.

MongoDB: when HARNESS_TEST_MONGO_URI is set, the MongoDB backend runs against that real
server. Otherwise it runs against litemongo, the most faithful in-process stand-in we have
(a pymongo-compatible client over SQLite files; no mongod can run on these machines). The
test ids say which (`mongo-server` or `mongo-litemongo-standin`).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pymongo
import pytest
from redis import Redis

from harness.config import Settings
from harness.store import Store
from harness.store import mongo as mongo_module
from harness.store.mongo import MongoStore
from harness.store.sqlite import SQLiteStore

MONGO_URI = os.environ.get("HARNESS_TEST_MONGO_URI")
MONGO_KIND = "mongo-server" if MONGO_URI else "mongo-litemongo-standin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def _no_log_file_outlives_its_test() -> Iterator[None]:
    """A run with file logging adds a handler to the harness logger; take it off again."""
    logger = logging.getLogger("harness")
    before = list(logger.handlers)
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture
def unused_port() -> int:
    """A TCP port nothing listens on (for unreachable-service tests)."""
    return free_port()


def start_redis(
    folder: Path, password: str | None = None, port: int | None = None, args: Sequence[str] = ()
) -> tuple[subprocess.Popen, str]:
    """Start a private redis-server on ``port`` (default: a free one), with extra server
    ``args``; return it and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH; .ci/run installs it")
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(folder), *args]
    if password:
        command += ["--requirepass", password]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    conn = Redis(port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.ping()
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    auth = f":{password}@" if password else ""
    return proc, f"redis://{auth}127.0.0.1:{port}/0"


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., str]]:
    """Start extra private redis-servers (e.g. with a password); stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(folder: Path, password: str | None = None, args: Sequence[str] = ()) -> str:
        proc, url = start_redis(folder, password, args=args)
        started.append(proc)
        return url

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test session; its URL."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """Small-run settings on the test Redis and a private data folder (embedded store)."""
    return Settings.from_env(
        environ={}, redis_url=redis_url, data_dir=tmp_path / "data", quantity=2_000,
        chunk_size=500, orders_per_job=100, normal_batch_size=700, concurrency=2, seed=42,
    )


@pytest.fixture
def mongo_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Make the MongoDB backend reach a real server or the litemongo stand-in; its URI.

    The stand-in is swapped in through ``client_factory`` in this process, so worker
    processes forked from it use it too. On a real server each test gets its own database,
    dropped afterwards.
    """
    if MONGO_URI:
        database = f"harness_test_{uuid.uuid4().hex[:8]}"
        yield _with_database(MONGO_URI, database)
        client = pymongo.MongoClient(MONGO_URI)
        client.drop_database(database)
        client.close()
        return
    import litemongo

    folder = tmp_path / "litemongo"
    folder.mkdir()
    monkeypatch.setattr(
        mongo_module, "client_factory", lambda uri, **kw: litemongo.connect(str(folder))
    )
    yield "mongodb://harness:s3cret-pw@standin.invalid:27017/harness_test"


def _with_database(uri: str, database: str) -> str:
    base, _, query = uri.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(params=["sqlite", MONGO_KIND])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn, empty."""
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "contract.sqlite3")
    else:
        uri = request.getfixturevalue("mongo_standin")
        opened = MongoStore(uri)
    opened.clear_orders()
    opened.clear_runs()
    yield opened
    opened.close()
