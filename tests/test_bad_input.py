"""Bad input at every door: each environment variable and each command's flags, given a
value out of range or of the wrong type, end in one line that names where the value came
from and the value, exit 2, and write nothing: no data folder, not one Redis key.
(Notebook parameters: tests/test_notebooks.py.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from harness.cli import main
from harness.config import ENV_VARS, Settings

# (variable, bad value, what the message must say besides the variable and the value)
BAD_ENV = [
    ("HARNESS_QUANTITY", "-5", "quantity must be >= 1"),
    ("HARNESS_QUANTITY", "0", "quantity must be >= 1"),
    ("HARNESS_QUANTITY", "2000000", "above MAX_ORDERS"),
    ("HARNESS_QUANTITY", "99999999999999", "quantity must be <= 4,294,967,295"),
    ("HARNESS_QUANTITY", "lots", "must be an integer"),
    ("MAX_ORDERS", "0", "max_orders must be >= 1"),
    ("GENERATION_CHUNK_SIZE", "0", "chunk_size must be >= 1"),
    ("GENERATION_CHUNK_SIZE", "1.5", "must be an integer"),
    ("NORMAL_ENQUEUE_BATCH_SIZE", "-1", "normal_batch_size must be >= 1"),
    ("ORDERS_QUEUE_CONCURRENCY", "-1", "concurrency must be >= 0"),
    ("ORDERS_QUEUE_CONCURRENCY", "100000", "concurrency must be <= 256"),
    ("HARNESS_ORDERS_PER_JOB", "0", "orders_per_job must be >= 1"),
    ("HARNESS_SEED", "-1", "seed must be >= 0"),
    ("HARNESS_SEED", "x", "must be an integer"),
    ("HARNESS_TIER_MIX", "GOLD=1", "is not TIER=WEIGHT"),
    ("HARNESS_TIER_MIX", "DIAMANTE=0", "gives every tier weight 0"),
    ("HARNESS_TIER_MIX", "BRONZE=1e308,PRATA=1e308", "add up to more than a number can hold"),
    ("HARNESS_TIER_MIX", "DIAMANTE=1,DIAMANTE=2", "names DIAMANTE twice"),
    ("HARNESS_QUANTITY", "\u0663", "must be an integer"),  # Arabic-Indic 3: int() takes it
    ("HARNESS_QUANTITY", " 5", "must be an integer"),
    ("GENERATION_CHUNK_SIZE", "1_000", "must be an integer"),
    ("REDIS_URL", "redis://127.0.0.1:6379/abc", "must be an integer from 0 to 15"),
    ("REDIS_URL", "redis://127.0.0.1:6379/16", "must be an integer from 0 to 15"),
    ("REDIS_URL", "http://127.0.0.1:6379/0", "is not a Redis URL"),
    ("REDIS_URL", "redis://127.0.0.1:99999/0", "a port is 1-65535"),
    ("HARNESS_WORK_MS", "-1", "work_ms must be at least 0"),
    ("HARNESS_WORK_MS", "nan", "work_ms must be a finite number, got 'nan'"),
    ("HARNESS_WORK_MS", "\u0663", "work_ms must be a number"),
    ("HARNESS_WORK_MS", "1_0", "work_ms must be a number"),
    ("HARNESS_TIER_MIX", "DIAMANTE=\uff11", "tier mix weight for DIAMANTE must be a number"),
    ("HARNESS_QUANTITY", " ", "quantity must be an integer, got only spaces"),
    ("REDIS_URL", "REDIS://", "names no host"),
    ("HARNESS_WORK_MS", "slow", "must be a number"),
    ("REDIS_PORT", "70000", "redis_port must be <= 65,535"),
    ("LOG_PROGRESS_EVERY_MS", "0", "log_progress_every_ms must be >= 1"),
    ("LOG_MEMORY", "maybe", "must be true or false"),
    ("BACKEND_LOGS", "2", "must be true or false"),
    ("HARNESS_STUCK_AFTER_S", "0", "stuck_after_s must be above 0"),
    ("HARNESS_CANCEL_TIMEOUT_S", "-3", "cancel_timeout_s must be above 0"),
    ("HARNESS_STORE_TIMEOUT_S", "600", "at most 60 s"),
    ("HARNESS_JOB_RETRIES", "50", "job_retries must be <= 20"),
    ("HARNESS_JOB_RETRIES", "-1", "job_retries must be >= 0"),
    ("HARNESS_RETRY_BACKOFF_S", "-1", "retry_backoff_s must be at least 0"),
    ("HARNESS_WORKER_WAIT_S", "0", "worker_wait_s must be above 0"),
    ("DATABASE_URL", "mysql://h/db", "is not a PostgreSQL URL"),
    ("DATABASE_URL", "postgresql://h:99999/db", "a port is 1-65535"),
    ("HARNESS_SWEEP_ID", "../etc", "must be 1-64 letters"),
    ("HARNESS_WARMUP", "perhaps", "must be true or false"),
    ("PORT", "0", "port must be >= 1"),
    ("PORT", "http", "port must be an integer"),
]


@pytest.fixture
def clean(settings: Settings, redis_conn: Redis, tmp_path: Path) -> dict[str, str]:
    """An environment pointing at the test Redis and a data folder that does not exist yet."""
    return {"REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(tmp_path / "data"),
            "MONGO_URI": "", **{var: "" for var, _ in ENV_VARS.values()
                                if var not in ("REDIS_URL", "HARNESS_DATA_DIR", "MONGO_URI")}}


def _nothing_written(env: dict[str, str], redis_conn: Redis) -> None:
    assert not Path(env["HARNESS_DATA_DIR"]).exists()
    assert redis_conn.dbsize() == 0


def test_every_checked_variable_has_a_bad_value_here() -> None:
    kinds = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    checked = {var for name, (var, _) in ENV_VARS.items()
               if any(t in kinds[name] for t in ("int", "float", "bool"))
               or name in ("tier_mix", "sweep_id", "redis_url")}
    assert checked <= {var for var, _, _ in BAD_ENV}


@pytest.mark.parametrize(("var", "value", "message"), BAD_ENV)
def test_a_bad_environment_variable_is_named_with_its_value_and_nothing_is_written(
    clean: dict[str, str], redis_conn: Redis, var: str, value: str, message: str
) -> None:
    result = CliRunner().invoke(main, ["run", "-n", "1000"] if var != "HARNESS_QUANTITY" else ["run"],
                                env={**clean, var: value})
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("harness: error:") and len(line.splitlines()) == 1
    assert f"{var}='{value}'" in line or f"{var} must be" in line
    assert message in line
    _nothing_written(clean, redis_conn)


@pytest.mark.parametrize(("args", "message"), [
    (["run", "-n", "-5"], "-n/--quantity -5: quantity must be >= 1, got -5"),
    (["run", "-n", "0"], "-n/--quantity 0: quantity must be >= 1"),
    (["run", "-n", "5000000000000"], "-n/--quantity 5000000000000: quantity must be <= 4,294,967,295"),
    (["run", "-n", "1600000"], "-n/--quantity 1600000: quantity 1,600,000 is above MAX_ORDERS"),
    (["run", "-n", "many"], "-n/--quantity many: quantity must be an integer, got 'many'"),
    (["run", "--chunk-size", "0"], "--chunk-size 0: chunk_size must be >= 1"),
    (["run", "-j", "0"], "-j/--orders-per-job 0: orders_per_job must be >= 1"),
    (["run", "-c", "-1"], "-c/--concurrency -1: concurrency must be >= 0"),
    (["run", "--work-ms", "-2"], "--work-ms -2: work_ms must be at least 0"),
    (["run", "--tier-mix", "OURO=x"], "--tier-mix OURO=x: tier mix weight for OURO must be a number"),
    (["run", "--tier-mix", "BRONZE=1e308,PRATA=1e308"],
     "--tier-mix BRONZE=1e308,PRATA=1e308: tier mix 'BRONZE=1e308,PRATA=1e308': the weights add up"),
    (["run", "--tier-mix", "DIAMANTE=1,DIAMANTE=2"], "names DIAMANTE twice"),
    (["run", "-n", " 5"], "-n/--quantity ' 5': quantity must be an integer, got ' 5': ASCII digits"),
    (["run", "-n", "1_000"], "-n/--quantity 1_000: quantity must be an integer, got '1_000'"),
    (["run", "-n", "\u0663"], "quantity must be an integer, got '\u0663'"),
    (["run", "--seed", "+4"], "--seed +4: seed must be an integer, got '+4'"),
    (["runs", "--limit", " 5"], "--limit ' 5': limit must be an integer, got ' 5'"),
    (["sweep", "--chunk-sizes", "1_000,2000"],
     "--chunk-sizes 1_000: chunk_size must be an integer, got '1_000'"),
    (["run", "--redis-url", "redis://127.0.0.1:6379/abc"],
     "--redis-url redis://127.0.0.1:6379/abc: redis_url 'redis://127.0.0.1:6379/abc': the database"),
    (["status", "--redis-url", "redis://127.0.0.1:6379/abc"], "must be an integer from 0 to 15"),
    (["run", "--seed", "-4"], "--seed -4: seed must be >= 0"),
    (["resume", "-c", "999"], "-c/--concurrency 999: concurrency must be <= 256"),
    (["worker", "-c", "0"], "-c/--concurrency 0: harness worker starts at least 1 worker"),
    (["bench", "-n", "0"], "-n/--quantity 0: quantity must be >= 1"),
    (["sweep", "--chunk-sizes", "500,0"], "--chunk-sizes 0: chunk_size must be >= 1, got 0"),
    (["sweep", "-p", "normal_batch_size=10,-1"],
     "--param normal_batch_size=-1: normal_batch_size must be >= 1, got -1"),
    (["sweep", "-p", "nosuch=1"], "--param 'nosuch=1': expected NAME=VALUES with NAME one of"),
    (["sweep", "-p", "work_ms=fast"], "--param work_ms=fast: work_ms must be a number, got 'fast'"),
    (["sweep", "-r", "0"], "-r/--repeats 0: repeats must be >= 1, got 0"),
    (["cancel", "--timeout", "-1"], "--timeout -1: cancel_timeout_s must be above 0"),
    (["health", "--stuck-after", "0"], "--stuck-after 0: stuck_after_s must be above 0"),
    (["runs", "--limit", "0"], "--limit 0: limit must be >= 1, got 0"),
])
def test_a_bad_flag_is_named_with_its_value_and_nothing_is_written(
    clean: dict[str, str], redis_conn: Redis, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, args, env=clean)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("harness: error: ")
    assert message in result.output
    _nothing_written(clean, redis_conn)


@pytest.mark.parametrize("args", [["run", "-n", "100", "--data-dir", ""], ["runs", "--data-dir", ""],
                                  ["status", "--data-dir", ""]])
def test_an_empty_data_dir_is_refused_instead_of_using_the_current_folder(
    clean: dict[str, str], redis_conn: Redis, tmp_path: Path, args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--data-dir ''` was Path(''), the current folder: the database landed there."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(main, args, env=clean)
    assert sorted(cwd.iterdir()) == []
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line == "harness: error: --data-dir '': data_dir must name a folder or file, got an empty path"
    _nothing_written(clean, redis_conn)


def test_a_redis_url_with_an_unescaped_password_is_refused_redacted(
    clean: dict[str, str], redis_conn: Redis
) -> None:
    """An unescaped '/' in the password makes the rest of it read as the database: refused
    before connecting, and the message shows neither half of the password."""
    result = CliRunner().invoke(main, ["run", "-n", "100"],
                                env={**clean, "REDIS_URL": "redis://:Sl4sh/PW77@127.0.0.1:6421/0"})
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("harness: error: REDIS_URL='redis://:***@127.0.0.1:6421/0'")
    assert len(line.splitlines()) == 1 and "Sl4sh" not in line and "PW77" not in line
    _nothing_written(clean, redis_conn)
