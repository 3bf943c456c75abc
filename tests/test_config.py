"""Settings: defaults, environment names users know, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import CHECKOUT, ConfigError, Settings, find_checkout, parse_tier_mix, redact


def test_defaults_match_the_original_service() -> None:
    s = Settings.from_env(environ={})
    assert (s.max_orders, s.chunk_size, s.normal_batch_size) == (1_500_000, 10_000, 10_000)
    assert s.quantity == 1_000_000 and s.work_ms == 0 and s.seed is None
    assert s.backend == "sqlite" and s.redis_address == "redis://127.0.0.1:6379/0"
    assert s.tier_weights == {"BRONZE": 1, "PRATA": 1, "OURO": 1, "DIAMANTE": 1}


def test_environment_is_read_and_flags_override_it() -> None:
    env = {
        "MONGO_URI": "mongodb://db:27017/x", "REDIS_HOST": "cache", "REDIS_PORT": "6380",
        "MAX_ORDERS": "2000000", "GENERATION_CHUNK_SIZE": "5000",
        "NORMAL_ENQUEUE_BATCH_SIZE": "2000", "ORDERS_QUEUE_CONCURRENCY": "8",
        "HARNESS_ORDERS_PER_JOB": "250", "HARNESS_SEED": "9", "HARNESS_WORK_MS": "1.5",
        "HARNESS_DATA_DIR": "/tmp/elsewhere", "HARNESS_QUANTITY": "1800000",
    }
    s = Settings.from_env(environ=env, concurrency=3)
    assert s.backend == "mongo" and s.redis_address == "redis://cache:6380/0"
    assert (s.max_orders, s.quantity, s.chunk_size, s.normal_batch_size) == (
        2_000_000, 1_800_000, 5_000, 2_000)
    assert (s.concurrency, s.orders_per_job, s.seed, s.work_ms) == (3, 250, 9, 1.5)
    assert s.data_dir == Path("/tmp/elsewhere")


def test_only_an_address_nobody_gave_lets_the_harness_start_its_own_redis() -> None:
    """A Redis the user named (even at the default address) is never started for them."""
    assert not Settings.from_env(environ={}).redis_given
    for env in ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, {"REDIS_HOST": "127.0.0.1"},
                {"REDIS_PORT": "6379"}):
        s = Settings.from_env(environ=env)
        assert s.redis_given and s.redis_address == "redis://127.0.0.1:6379/0"
        assert Settings.from_env(environ=s.to_env()) == s
    assert Settings.from_env(environ={}, redis_port=1).redis_given
    assert "REDIS_PORT" not in Settings.from_env(environ={}).to_env()


@pytest.mark.parametrize("url", ["redis://h:6379", "redis://h:6379/", "redis://h/15",
                                 "rediss://:p%2Fw@h:6380/0", "unix:///run/redis.sock?db=3"])
def test_usable_redis_urls_are_accepted(url: str) -> None:
    assert Settings.from_env(environ={"REDIS_URL": url}).redis_address == url


def test_redis_url_wins_over_host_and_port() -> None:
    s = Settings.from_env(environ={"REDIS_URL": "redis://r:1/2", "REDIS_HOST": "x"})
    assert s.redis_address == "redis://r:1/2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quantity": 0}, "quantity must be >= 1"),
        ({"quantity": -5}, "quantity must be >= 1"),
        ({"quantity": 1_500_001}, "above MAX_ORDERS"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"orders_per_job": -1}, "orders_per_job must be >= 1"),
        ({"normal_batch_size": 0}, "normal_batch_size must be >= 1"),
        ({"concurrency": -1}, "concurrency must be >= 0"),
        ({"quantity": 2.5}, "quantity must be an integer"),
        ({"tier_mix": "BRONZE=1,GOLD=2"}, "'GOLD=2' is not TIER=WEIGHT"),
        ({"tier_mix": "DIAMANTE=-1"}, "tier mix weight for DIAMANTE must be at least 0, got -1.0"),
        ({"tier_mix": "BRONZE=0"}, "gives every tier weight 0"),
        ({"tier_mix": "BRONZE=1e308,PRATA=1e308"}, "add up to more than a number can hold"),
        ({"tier_mix": "BRONZE=inf"}, "tier mix weight for BRONZE must be a finite number, got 'inf'"),
        ({"tier_mix": "DIAMANTE=\uff11"}, "tier mix weight for DIAMANTE must be a number, got '\uff11'"),
        ({"tier_mix": "DIAMANTE=1,diamante=2"}, "names DIAMANTE twice"),
        ({"redis_url": "redis://h:6379/abc"}, "must be an integer from 0 to 15"),
        ({"redis_url": "unix:///tmp/redis.sock?db=x"}, "must be an integer from 0 to 15"),
        ({"redis_url": "redis://h:0/0"}, "a port is 1-65535"),
        ({"data_dir": ""}, "data_dir must name a folder or file, got an empty path"),
        ({"reports_dir": " "}, "reports_dir must name a folder or file"),
        ({"log_file": ""}, "log_file must name a folder or file"),
        ({"work_ms": -1.0}, "work_ms must be at least 0 and at most 60000 ms, got -1.0"),
        ({"work_ms": "abc"}, "work_ms must be a number, got 'abc'"),
        ({"store_timeout_s": 0}, "store_timeout_s must be above 0"),
        ({"job_retries": 21}, "job_retries must be <= 20"),
        ({"max_orders": 2**32, "quantity": 10}, "max_orders must be <= 4,294,967,295"),
        ({"concurrency": 10_000}, "concurrency must be <= 256, got 10,000"),
        ({"chunk_size": 5_000_000}, "chunk_size must be <= 1,000,000"),
        ({"normal_batch_size": 2_000_000}, "normal_batch_size must be <= 1,000,000"),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_them(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ={}, **overrides)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HARNESS_QUANTITY": "lots"}, "HARNESS_QUANTITY='lots': quantity must be an integer, got 'lots'"),
        ({"ORDERS_QUEUE_CONCURRENCY": "1.5"},
         "ORDERS_QUEUE_CONCURRENCY='1.5': concurrency must be an integer"),
        ({"HARNESS_WORK_MS": "slow"}, "HARNESS_WORK_MS='slow': work_ms must be a number"),
        ({"MAX_ORDERS": "-3"}, "MAX_ORDERS='-3': max_orders must be >= 1"),
        ({"HARNESS_QUANTITY": " "}, "HARNESS_QUANTITY=' ': quantity must be an integer, got only spaces"),
        ({"REDIS_URL": "REDIS://"}, "REDIS_URL='REDIS://': redis_url 'REDIS://' names no host"),
    ],
)
def test_bad_environment_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ=env)


def test_tier_mix_leaves_unnamed_tiers_at_zero() -> None:
    assert parse_tier_mix("diamante=3, OURO=1") == {
        "BRONZE": 0, "PRATA": 0, "OURO": 1, "DIAMANTE": 3}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("mongodb://admin:hunter2@db:27017/orders?authSource=admin", "hunter2"),
        ("mongodb+srv://u:p%40ss@cluster0.example.net/x", "p%40ss"),
        ("redis://:topsecret@cache:6379/0", "topsecret"),
        ("error talking to redis://user:pw123@h:1/0 (timeout)", "pw123"),
        ("mongodb://h/db?password=qwerty&w=1", "qwerty"),
    ],
)
def test_redact_hides_passwords_and_keeps_the_rest(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out
    assert out.split("***")[0] == text.split(secret)[0]


def test_public_dict_is_redacted() -> None:
    s = Settings.from_env(environ={"MONGO_URI": "mongodb://a:b4dpw@h/x",
                                   "REDIS_URL": "redis://:r3dpw@h:1/0"})
    text = repr(s.public_dict())
    assert "b4dpw" not in text and "r3dpw" not in text


def test_every_setting_is_documented_in_the_readme_and_the_cli() -> None:
    from harness.config import ENV_VARS, option_help

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    fields = {f for f in Settings.__dataclass_fields__}
    assert set(ENV_VARS) == fields
    for name, (var, _doc) in ENV_VARS.items():
        assert f"`{var}`" in readme, f"{var} missing from README's configuration table"
        assert f"env {var};" in option_help(name)


def test_default_folders_are_the_checkouts_wherever_the_process_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # as a JupyterLab kernel starts in notebooks/
    assert CHECKOUT is not None  # the tests run from a checkout
    s = Settings.from_env(environ={})
    assert s.data_dir == CHECKOUT / "data" and s.reports_dir == CHECKOUT / "reports"
    # A folder the user names stays as they wrote it: relative to their working directory.
    assert Settings.from_env(environ={"HARNESS_DATA_DIR": "mine"}).data_dir == Path("mine")
    assert Settings.from_env(environ={}, reports_dir="out").with_absolute_paths().reports_dir == (
        tmp_path / "out").resolve()


def test_a_checkout_is_the_folder_above_the_package_whose_pyproject_names_the_harness(
    tmp_path: Path,
) -> None:
    package = tmp_path / "site-packages" / "harness"
    package.mkdir(parents=True)
    assert find_checkout(package) is None  # an installed package: no pyproject.toml
    pyproject = package.parent / "pyproject.toml"
    for text in ('[project]\nname = "other"\n', "not [toml"):
        pyproject.write_text(text)
        assert find_checkout(package) is None
    pyproject.write_text('[project]\nname = "harness"\n')
    assert find_checkout(package) == package.parent


def test_a_notebook_names_its_bad_parameter_and_leaves_an_environment_error_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness import notebook

    with pytest.raises(ConfigError, match=r"^notebook parameter quantity=-5: quantity must be >= 1"):
        notebook.settings(quantity=-5)
    with pytest.raises(ConfigError, match=r"^notebook parameter grid\['concurrency'\]=\[\]: "):
        notebook.sweep_size(Settings.from_env(environ={}), {"concurrency": []}, 1, None)
    monkeypatch.setenv("GENERATION_CHUNK_SIZE", "0")  # the parameter left None: the variable's
    with pytest.raises(ConfigError, match=r"^GENERATION_CHUNK_SIZE='0': chunk_size must be >= 1"):
        notebook.settings(quantity=5, chunk_size=None)
    assert notebook.settings(quantity=5, chunk_size=7).chunk_size == 7
