"""The PostgreSQL store from the outside: chosen in one place, a whole run through the CLI
(its proof checked again in SQL, on the stored timestamps), passwords never shown, and the
store as a sweep axis. The contract and the faults are in test_store_contract.py and
test_faults.py; a real server (see conftest's postgres_url), a database per test."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner
from conftest import assert_complete
from redis import Redis

from harness.cli import main
from harness.config import Settings, parse_grid
from harness.errors import ConfigError
from harness.launch import child_env
from harness.record import RunRecord
from harness.report import grid_points
from harness.store import open_store
from harness.store.postgres import PostgresStore


def _with_password(url: str, password: str) -> str:
    """The URL with a password (the local server trusts loopback and ignores it)."""
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def test_the_backend_is_decided_in_one_place(postgres_url: str, tmp_path: object) -> None:
    assert Settings.from_env(environ={"DATABASE_URL": postgres_url}).backend == "postgres"
    assert Settings.from_env(environ={"DATABASE_URL": "postgres://h/db"}).backend == "postgres"
    assert Settings.from_env(environ={"MONGO_URI": "mongodb://h/db"}).backend == "mongo"
    assert Settings.from_env(environ={}).backend == "sqlite"
    store = open_store(Settings.from_env(environ={"DATABASE_URL": postgres_url}))
    try:
        assert isinstance(store, PostgresStore) and store.describe()["backend"] == "postgres"
    finally:
        store.close()
    with pytest.raises(ConfigError, match="MONGO_URI and DATABASE_URL are both set"):
        Settings.from_env(environ={"DATABASE_URL": postgres_url, "MONGO_URI": "mongodb://h/x"})


def test_both_store_urls_set_is_one_line_naming_both(redis_conn: Redis, postgres_url: str) -> None:
    result = CliRunner().invoke(main, ["run", "-n", "100", "--database-url", postgres_url,
                                       "--redis-url", "redis://127.0.0.1:1/0"],
                                env={"MONGO_URI": "mongodb://u:s3cret@h/x"})
    assert result.exit_code == 2
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "DATABASE_URL" in line and "MONGO_URI" in line, line
    assert "s3cret" not in line


def test_a_run_on_postgresql_is_complete_and_proven_in_sql_and_hides_its_password(
    settings: Settings, redis_conn: Redis, postgres_url: str
) -> None:
    url = _with_password(postgres_url, "s3cret-pw")
    settings = settings.replace(database_url=url, quantity=5_000)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--json", "--no-progress"],
                          env=child_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = RunRecord.from_json(json.loads(done.stdout))
    assert record.backend == "postgres"
    assert_complete(settings, record, redis_conn)
    with psycopg.connect(postgres_url) as conn:
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'orders'").fetchall())
        # The barrier again, in SQL, on timestamps PostgreSQL compares itself.
        held, = conn.execute(
            "SELECT max(processed_at) FILTER (WHERE priority = 'VIP') "
            "<= min(started_at) FILTER (WHERE priority = 'NORMAL') FROM orders").fetchone()
        stored, = conn.execute("SELECT record::text FROM process_runs WHERE run_id = %s",
                               (record.run_id,)).fetchone()
    assert types["created_at"] == types["processed_at"] == "timestamp with time zone"
    assert held is True
    assert "s3cret-pw" not in done.stdout + done.stderr + stored
    assert "***" in (record.environment.store["location"] if record.environment else "")


def test_the_store_is_a_sweep_axis_with_passwords_hidden(settings: Settings) -> None:
    pg = "postgresql://u:s3cret@db.example:5432/orders"
    grid = parse_grid(["store=sqlite, " + pg + ",mongodb://u:pw2@a,b/x?replicaSet=r",
                       "concurrency=1,2"])
    assert grid["store"] == ["sqlite", pg, "mongodb://u:pw2@a,b/x?replicaSet=r"]
    base = settings.replace(database_url="postgresql://other/db")  # the sweep's own store
    points = grid_points(base, grid, repeats=1, sweep_id="s")
    assert len(points) == 6
    backends = [(values["store"], s.backend, s.database_url, s.mongo_uri) for values, _, s in points]
    assert backends[0] == ("sqlite", "sqlite", None, None)
    assert backends[2] == ("postgres postgresql://u:***@db.example:5432/orders", "postgres", pg, None)
    assert backends[4][1:3] == ("mongo", None)
    assert not any("s3cret" in repr(values) or "pw2" in repr(values) for values, _, _ in points)
    with pytest.raises(ConfigError, match="store") as info:
        parse_grid(["store=sqlite,mysql://u:s3cret@h/db"])
    assert "s3cret" not in str(info.value)
