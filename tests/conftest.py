"""Shared fixtures: a real redis-server per test on a free port, settings pointing at it, the
store backends the contract suite runs over, a run in the background, and the proof that a
run is complete.

Isolation: each test has a redis-server of its own, stopped when the test ends, so a
process a failing test leaves behind (a coordinator, a worker pool) loses its Redis with it
and cannot take a later test's jobs; and every child process a test started must be gone
when it ends (checked, then killed, so one failure does not cascade).

MongoDB: when HARNESS_TEST_MONGO_URI is set, the MongoDB backend runs against that real
server. Otherwise it runs against litemongo, the most faithful in-process stand-in we have
(a pymongo-compatible client over SQLite files; no mongod can run on these machines). The
test ids say which (`mongo-server` or `mongo-litemongo-standin`).

PostgreSQL: a real server always (HARNESS_TEST_DATABASE_URL, default the local one at
127.0.0.1:5432), a database of each test's own, dropped after it. Where no server answers
the tests skip saying so, unless HARNESS_REQUIRE_POSTGRES=1 (CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pymongo
import pytest
from redis import Redis

from harness.config import Settings
from harness.orders import NORMAL, PROCESSED, VIP
from harness.pipeline import Progress, resume, run
from harness.record import RunRecord
from harness.state import ABORT_KEY, COUNTED_KEY, Phase, RunState
from harness.store import Store, open_store
from harness.store import mongo as mongo_module
from harness.store.mongo import MongoStore
from harness.store.sqlite import SQLiteStore

MONGO_URI = os.environ.get("HARNESS_TEST_MONGO_URI")
MONGO_KIND = "mongo-server" if MONGO_URI else "mongo-litemongo-standin"
POSTGRES_URL = os.environ.get("HARNESS_TEST_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")


def chromium_path() -> str:
    """Debian's chromium for the browser tests: skipped without it, except in CI
    (HARNESS_REQUIRE_BROWSER=1, set by .ci/run), where its absence fails the test."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (HARNESS_REQUIRE_BROWSER=1): scripts/ensure-chromium")
        pytest.skip("no chromium on PATH (scripts/ensure-chromium installs it)")
    return chromium


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


JUPYTER_VARS = ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
                "MPLCONFIGDIR")


@pytest.fixture
def kernel_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings for notebook kernels: they find the test Redis and store through
    the environment, and write their Jupyter and matplotlib state under tmp_path, not the
    home folder; reports under tmp_path."""
    for var in JUPYTER_VARS:
        folder = tmp_path / "jupyter" / var.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("REDIS_URL", settings.redis_address)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(settings.data_dir.resolve()))
    monkeypatch.setenv("MONGO_URI", "")
    return settings.replace(reports_dir=tmp_path / "reports")


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


@pytest.fixture
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test alone (about 20 ms to start); its URL."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.kill()
    proc.wait(10)


@pytest.fixture(autouse=True)
def _no_child_process_outlives_its_test() -> Iterator[None]:
    """Every process a test started (a run's worker pool, a `harness` subprocess, a server)
    is gone when it ends: a leftover fails the test that left it, and is killed so that it
    cannot disturb the next one. Redis servers the fixtures stop themselves are not
    counted: this runs before their teardown, so they are excluded by name."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 15  # a pool told to stop is given time to exit
    while True:
        left = [p for p in me.children(recursive=True) if p.pid not in before
                and _is_leftover(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    assert not left, f"processes outlived the test: {[_describe(p) for p in left]}"


def _is_leftover(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE and "redis-server" not in proc.name()
    except psutil.NoSuchProcess:
        return False


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:120]}"
    except psutil.Error:
        return str(proc.pid)


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
    # Processes this test starts (a sweep's kernels) load tests/standin/sitecustomize.py,
    # which swaps in the same stand-in over the same folder.
    monkeypatch.setenv("HARNESS_TEST_LITEMONGO_DIR", str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent / "standin"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    yield "mongodb://harness:s3cret-pw@standin.invalid:27017/harness_test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of this test's own on the PostgreSQL server, dropped after the test (its
    connections cut first); its URL."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL at {POSTGRES_URL}: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (HARNESS_REQUIRE_POSTGRES=1; scripts/ensure-postgres starts one)")
        pytest.skip(reason)
    database = f"harness_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield _with_database(POSTGRES_URL, database)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def on_backend(settings: Settings, backend: str, request: pytest.FixtureRequest) -> Settings:
    """``settings`` storing in ``backend``: "sqlite" (the data folder), "postgres" (a
    database of the test's own) or "mongo" (a server or the stand-in, see mongo_standin)."""
    if backend == "postgres":
        return dataclasses.replace(settings, database_url=request.getfixturevalue("postgres_url"))
    if backend == "mongo":
        return dataclasses.replace(settings, mongo_uri=request.getfixturevalue("mongo_standin"))
    return settings


def _with_database(uri: str, database: str) -> str:
    base, _, query = uri.partition("?")
    scheme, _, rest = base.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(params=["sqlite", MONGO_KIND, "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn, empty, claimed by a run named "contract"."""
    opened = _open_contract_store(request, tmp_path)
    opened.claim("contract")
    opened.clear_orders()
    opened.clear_runs()
    yield opened
    opened.close()


@pytest.fixture
def other_handle(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A second handle on the same store, as another process would hold."""
    opened = _open_contract_store(request, tmp_path)
    yield opened
    opened.close()


def _open_contract_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return contract_store_opener(request, tmp_path)()


def contract_store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """What opens another handle on the contract test's store, its fixtures resolved here
    (so that it can be called from another thread)."""
    kind = request.node.callspec.params["store"]
    if kind == "sqlite":
        return lambda: SQLiteStore(tmp_path / "contract.sqlite3")
    if kind == "postgres":
        from harness.store.postgres import PostgresStore

        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore(url)
    uri = request.getfixturevalue("mongo_standin")
    return lambda: MongoStore(uri)


class BackgroundRun:
    """A run (or resume) in a thread of this process. ``on_progress`` sees every progress
    report; with ``hold``, the coordinator is kept in that phase (inside its progress
    report) until a cancel request exists, so that a cancel lands in that phase."""

    def __init__(self, settings: Settings, on_progress: Callable[[Progress], None] | None = None,
                 resuming: bool = False, hold: Phase | None = None, **kwargs: Any) -> None:
        self.conn = Redis.from_url(settings.redis_address)
        self.hold, self.reached = hold, threading.Event()
        self.on_progress = on_progress
        self.record: RunRecord | None = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        call = resume if resuming else run
        self.thread = threading.Thread(target=self._run, args=(call, settings), kwargs=kwargs)
        self.thread.start()

    def _progress(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)
        if p.phase is self.hold and not self.reached.is_set():
            self.reached.set()
            deadline = time.monotonic() + 30
            while not self.conn.exists(ABORT_KEY) and time.monotonic() < deadline:
                time.sleep(0.005)

    def _run(self, call: Callable[..., RunRecord], settings: Settings, **kwargs: Any) -> None:
        try:
            self.record = call(settings, progress=self._progress, **kwargs)
        except BaseException as exc:  # reported by join()
            self.error = exc
        self.ended_at = time.monotonic()

    def join(self, timeout: float = 90) -> RunRecord:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        assert self.record is not None
        return self.record


def assert_complete(settings: Settings, record: RunRecord, conn: Redis | None = None) -> list[dict[str, Any]]:
    """The proof of a complete run, from the store itself: recorded DONE; generated =
    processed = N; seqs 0..N-1 each once with unique ids; every order processed with its
    times, worker and try; the live counters (and, with ``conn``, the per-job counts plus
    what a resume found processed) equal N; the barrier recomputed from the raw orders."""
    assert record.phase == "DONE", record.error
    assert record.error is None
    n = settings.quantity
    assert record.counts.generated == n == record.counts.processed
    assert record.barrier is not None and record.barrier.held is True
    assert record.processing is not None
    assert record.processing.vip.count + record.processing.normal.count == n
    store = open_store(settings)
    try:
        tally = store.tally()
        docs = store.get_orders(range(n))
        stored = store.get_run(record.run_id)
    finally:
        store.close()
    assert stored is not None and stored.phase == "DONE"
    assert stored.parameters["quantity"] == n and stored.environment is not None
    assert tally.count() == tally.max_seq + 1 == n == len({d["id"] for d in docs})
    assert tally.count(status=PROCESSED) == n
    assert record.counts.vip == tally.count(VIP) and record.counts.normal == tally.count(NORMAL)
    assert all(d["processedAt"] and d["startedAt"] and d["worker"] and d["attempts"] >= 1
               and d["startedAt"] <= d["processedAt"] for d in docs)
    if conn is not None:
        state = RunState(conn)
        assert state.processed(VIP) == tally.count(VIP)
        assert state.processed(NORMAL) == tally.count(NORMAL)
        before = record.resumes[-1].processed if record.resumes else 0
        assert sum(int(v) for v in conn.hvals(COUNTED_KEY)) + before == n
    vip_end = max((d["processedAt"] for d in docs if d["priority"] == VIP), default=None)
    normal_start = min((d["startedAt"] for d in docs if d["priority"] == NORMAL), default=None)
    if vip_end is not None and normal_start is not None:
        assert normal_start >= vip_end
    return docs
