"""The `harness` command: bad input and unreachable services fail fast with one clear line
and write nothing; a small run prints its summary; status and history read back."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from harness.cli import main
from harness.config import Settings
from harness.connection import RedisUnavailable, connect_redis
from harness.lock import LOCK_KEY, LockHolder
from harness.pipeline import run
from harness.record import RunRecord
from harness.store import open_store


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a CLI call: the test Redis, a private data folder, small defaults."""
    return {
        "REDIS_URL": redis_url, "HARNESS_DATA_DIR": str(tmp_path / "data"),
        "HARNESS_QUANTITY": "1500", "GENERATION_CHUNK_SIZE": "500",
        "HARNESS_ORDERS_PER_JOB": "100", "HARNESS_SEED": "11", "MONGO_URI": "",
    }


def invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "quantity must be >= 1"),
        (["-n", "-10"], "quantity must be >= 1"),
        (["-n", "1500001"], "above MAX_ORDERS"),
        (["-n", "5", "--max-orders", "4"], "above MAX_ORDERS"),
        (["--chunk-size", "0"], "chunk_size must be >= 1"),
        (["-j", "0"], "orders_per_job must be >= 1"),
        (["-c", "-1"], "concurrency must be >= 0"),
        (["--normal-batch-size", "-1"], "normal_batch_size must be >= 1"),
        (["--tier-mix", "BRONZE=1,PLATINA=1"], "'PLATINA=1' is not TIER=WEIGHT"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    args: list[str], message: str, env: dict[str, str], redis_conn: Redis
) -> None:
    result = invoke(["run", *args], env)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ")
    assert message in lines[0]
    assert not Path(env["HARNESS_DATA_DIR"]).exists()
    assert redis_conn.dbsize() == 0


def test_non_integer_quantity_is_a_usage_error(env: dict[str, str]) -> None:
    result = invoke(["run", "-n", "1.5"], env)
    assert result.exit_code == 2 and "quantity must be an integer, got '1.5'" in result.output


def test_bad_environment_value_is_refused(env: dict[str, str]) -> None:
    result = invoke(["run"], {**env, "ORDERS_QUEUE_CONCURRENCY": "many"})
    assert result.exit_code == 2
    assert "ORDERS_QUEUE_CONCURRENCY='many': concurrency must be an integer" in result.output


def test_unreachable_redis_fails_fast_and_redacted(env: dict[str, str], unused_port: int) -> None:
    # A local address with a password is never auto-started: it names a server we don't own.
    url = f"redis://:hunter2@127.0.0.1:{unused_port}/0"
    result = invoke(["run"], {**env, "REDIS_URL": url})
    assert result.exit_code == 1
    assert "does not answer" in result.output and "hunter2" not in result.output
    assert not Path(env["HARNESS_DATA_DIR"]).exists()


def test_unreachable_mongodb_fails_with_a_redacted_error_before_any_write(
    env: dict[str, str], redis_conn: Redis, unused_port: int
) -> None:
    uri = f"mongodb://admin:hunter2@127.0.0.1:{unused_port}/orders"
    result = invoke(["run"], {**env, "MONGO_URI": uri})
    assert result.exit_code == 1
    assert "cannot reach MongoDB at mongodb://admin:***@127.0.0.1" in result.output
    assert "hunter2" not in result.output
    assert redis_conn.dbsize() == 0


def test_a_second_run_is_refused_while_one_holds_the_lock(
    env: dict[str, str], redis_conn: Redis
) -> None:
    settings = Settings.from_env(environ=env, quantity=300)
    first = run(settings)
    # Held by a live process of this host (this one), so not provably stale.
    redis_conn.set(LOCK_KEY, str(LockHolder.mine("20261130T000000-abcdef")), ex=60)
    result = invoke(["run", "--no-progress"], env)
    assert result.exit_code == 1
    assert "run 20261130T000000-abcdef (coordinator" in result.output
    assert "harness cancel" in result.output and "--force" in result.output
    # The refused run cleared nothing and recorded nothing.
    store = open_store(settings)
    try:
        assert store.count_orders(status="processado") == 300
        assert [r.run_id for r in store.list_runs()] == [first.run_id]
    finally:
        store.close()


def test_run_prints_a_summary_then_status_and_runs_read_it_back(env: dict[str, str]) -> None:
    result = invoke(["run", "--no-progress"], env)
    assert result.exit_code == 0, result.output
    assert "DONE" in result.output and "barrier         held" in result.output
    assert "1,500 generated" in result.output

    status = json.loads(invoke(["status", "--json"], env).output)
    assert status["phase"] == "DONE" and status["progress"]["processedTotal"] == 1500

    records = json.loads(invoke(["runs", "--json"], env).output)
    assert [r["runId"] for r in records] == [status["lastRunId"]]
    csv = invoke(["runs", "--csv"], env).output.splitlines()
    assert csv[0].startswith("runId,sweepId,startedAt,phase") and csv[1].startswith(status["lastRunId"])
    table = invoke(["runs"], env).output
    assert status["lastRunId"] in table and "DONE" in table
    assert " 1,500 " in table and " orders/s " in table.splitlines()[0]  # numbers as the summary writes them


def test_run_json_output_is_the_stored_record(env: dict[str, str]) -> None:
    result = invoke(["run", "--no-progress", "--json", "-n", "800"], env)
    record = json.loads(result.output)
    assert record["phase"] == "DONE" and record["counts"]["processed"] == 800
    settings = Settings.from_env(environ=env)
    store = open_store(settings)
    try:
        assert store.get_run(record["runId"]) == RunRecord.from_json(record)
    finally:
        store.close()


def test_workers_started_apart_join_a_run(settings: Settings, redis_url: str, tmp_path: Path) -> None:
    """`harness worker` in its own process (as on another host) does a run's work."""
    worker_env = {**os.environ, "REDIS_URL": redis_url, "HARNESS_DATA_DIR": str(settings.data_dir)}
    worker_env.pop("MONGO_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "worker", "-c", "2"],
                            env=worker_env, stderr=subprocess.PIPE, text=True)
    try:
        record = run(settings, start_workers=False)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert record.phase == "DONE", record.error
    assert record.counts.processed == settings.quantity
    assert "starting 2 worker(s)" in stderr
    # The run samples the processes it started (harness.sampling): its coordinator and, with
    # 4 chunks (2,000 orders of 500), the process generating every other one; workers
    # started apart are not measured, and the record does not pretend they were.
    assert record.memory is not None and record.memory.method == "psutil"
    assert record.memory.workers == 0 and record.memory.worker_peak_mb is None
    assert settings.quantity // settings.chunk_size >= 4
    assert sorted(p.role for p in record.memory.processes) == ["coordinator", "generator"]


def test_a_local_redis_is_started_when_none_was_configured_and_none_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, unused_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No REDIS_URL, REDIS_HOST or REDIS_PORT: the default address, moved to a free port here
    so that this test never meets (or starts) a Redis on 6379."""
    monkeypatch.setattr("harness.config.DEFAULT_REDIS_PORT", unused_port)
    settings = Settings.from_env(environ={}, data_dir=tmp_path)
    assert not settings.redis_given and settings.redis_address.endswith(f":{unused_port}/0")
    with caplog.at_level(logging.WARNING, logger="harness"):
        conn = connect_redis(settings)
    try:
        assert conn.ping() is True
        pid = (tmp_path / "redis.pid").read_text().strip()
        assert f"started a local redis-server on 127.0.0.1:{unused_port} (pid {pid}" in caplog.text
        assert f"stop it with `redis-cli -p {unused_port} shutdown`" in caplog.text
    finally:
        conn.shutdown(nosave=True)


def test_a_remote_redis_that_is_down_is_an_error(tmp_path: Path) -> None:
    settings = Settings.from_env(environ={}, redis_url="redis://redis.invalid:6379/0",
                                 data_dir=tmp_path)
    with pytest.raises(RedisUnavailable, match=r"redis\.invalid"):
        connect_redis(settings)
    assert not (tmp_path / "redis.pid").exists()


def test_sigterm_aborts_the_run_cleanly(env: dict[str, str], redis_conn: Redis) -> None:
    """`docker stop` or Ctrl-C mid-run: the run is recorded ABORTED, its queues purged, its
    lock released and its workers stopped before the command exits."""
    from rq import Worker

    from harness.queue import queues
    from harness.status import get_status

    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "-n", "400000", "--chunk-size", "1000",
         "--no-progress"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        while get_status(redis_conn)["progress"]["generated"] < 5_000:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.01)  # polling a condition, not waiting out a race
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 1, output
    doc = get_status(redis_conn)
    assert doc["phase"] == "ABORTED", output
    assert doc["error"] == "interrupted (SIGTERM)"
    assert 5_000 <= doc["progress"]["generated"] < 400_000
    assert redis_conn.get(LOCK_KEY) is None
    assert all(q.count == 0 for q in queues(redis_conn).values())
    assert Worker.all(connection=redis_conn) == []
    store = open_store(Settings.from_env(environ=env))
    try:
        record = store.get_run(doc["lastRunId"])
    finally:
        store.close()
    # Recorded once every worker had stopped, from the store: it matches the store.
    assert record is not None and record.phase == "ABORTED"
    store = open_store(Settings.from_env(environ=env))
    try:
        processed = store.count_orders(status="processado")
        generated = store.count_orders()
    finally:
        store.close()
    assert record.counts.processed == processed == doc["progress"]["processedTotal"]
    assert record.counts.generated == generated == record.counts.vip + record.counts.normal


def test_workers_stop_when_their_coordinator_is_killed(
    env: dict[str, str], redis_conn: Redis
) -> None:
    """SIGKILL leaves no handler to run: the pool must notice on its own and stop, or its
    workers would take the next run's jobs with this run's settings."""
    from rq import Worker

    from harness.status import get_status

    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "-n", "400000", "--chunk-size", "1000",
         "--no-progress"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while get_status(redis_conn)["progress"]["generated"] < 5_000:
            assert proc.poll() is None
            time.sleep(0.01)  # polling a condition, not waiting out a race
        assert len(Worker.all(connection=redis_conn)) == 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while Worker.all(connection=redis_conn):
        assert time.monotonic() < deadline, "workers outlived their coordinator by 30 s"
        time.sleep(0.1)
