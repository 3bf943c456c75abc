"""One door policy: the same hostile value gets the same verdict, and the same message, at
every door it can come in by: a flag (click, in process), an environment variable, a
notebook parameter (the library function the notebook calls) and an HTTP query parameter
(a real `harness serve` process). Each refusal is one line naming where the value came
from, exit 2 or HTTP 400, before anything is written or started.

Fast on purpose: no run is started. The commands a value could start (a run, a server, a
sweep) are replaced by a tripwire that fails the test if the value got through.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import free_port, start_redis, wait_for

from harness import notebook, parsing, results
from harness.cli import main
from harness.config import ENV_VARS, RULES, RUN_SHAPE, SWEEPABLE, Settings, parse_grid
from harness.errors import ConfigError
from harness.parsing import shown

TOKEN = "t\u00f6k"  # HARNESS_API_TOKEN='tök': not ASCII
AUTH = {"Authorization": f"Bearer {TOKEN}".encode()}  # as a UTF-8 terminal's curl sends it

# Text no door may read as an integer: spaces, '_', '+', a decimal point or exponent, other
# scripts' digits, hex, numbers no bound allows (20 and 40 digits), NaN and infinity, nothing.
BAD_INTEGERS = [" 5", "5 ", "  5", "5\n", "1_000", "+4", "5.0", "1e3", "0x10", "\u0663",
                "\uff15", "9223372036854775808", "99999999999999999999", "-99999999999999999999",
                "9" * 40, "nan",
                "inf", "", " ", "null", "five"]
# ... nor as a number (NaN, infinity and what float() alone would take).
BAD_NUMBERS = [" 1", "1 ", "1_0", "+1", "\u0663", "\uff11", "nan", "NaN", "inf", "-inf",
               "Infinity", "1e999", "0x10", "", " ", "null", "1,5", "slow"]
# ... nor as a tier weight (spaces around a weight are allowed, as around the commas).
BAD_WEIGHTS = ["1_0", "+4", "\u0663", "\uff11", "nan", "inf", "1e999", "0x10", "", "-1", "0"]

# A setting: its flag (on `harness run`), its variable, its query parameter on POST
# /pedidos/generate, and how a value becomes the flag's text (a tier weight is one entry).
SETTINGS = {
    "quantity": ("-n", "HARNESS_QUANTITY", "quantity", BAD_INTEGERS),
    "seed": ("--seed", "HARNESS_SEED", "seed", BAD_INTEGERS),
    "chunk_size": ("--chunk-size", "GENERATION_CHUNK_SIZE", "chunkSize", BAD_INTEGERS),
    "work_ms": ("--work-ms", "HARNESS_WORK_MS", "workMs", BAD_NUMBERS),
    "tier_mix": ("--tier-mix", "HARNESS_TIER_MIX", "tierMix", BAD_WEIGHTS),
}
SETTING_CASES = [(name, value) for name, (*_, values) in SETTINGS.items() for value in values]


def _text(name: str, value: str) -> str:
    return f"DIAMANTE={value}" if name == "tier_mix" else value


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Redis for the module (the conftest's is per test)."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.kill()
    proc.wait(10)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"  # never created by a refused value: nothing is written


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A real `harness serve` process whose POSTs need the non-ASCII token."""
    port = free_port()
    folder = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if k not in {var for var, _ in ENV_VARS.values()}}
    env.update(REDIS_URL=redis_url, HARNESS_DATA_DIR=str(folder / "data"), HARNESS_API_TOKEN=TOKEN)
    log = folder / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--port", str(port)],
                                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def answers() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return client.get("/pedidos").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "harness serve to answer", timeout=60)
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def env(redis_url: str, data_dir: Path) -> dict[str, str]:
    """Every setting unset but the module's Redis and a data folder that does not exist."""
    return {**{var: "" for var, _ in ENV_VARS.values()}, "REDIS_URL": redis_url,
            "HARNESS_DATA_DIR": str(data_dir)}


@pytest.fixture(autouse=True)
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything a refused value must never reach: a run, a server, a sweep."""
    def started(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("a value that should have been refused got through: the work started")

    import harness.api.server
    import harness.pipeline
    import harness.report

    monkeypatch.setattr(harness.pipeline, "run", started)
    monkeypatch.setattr(harness.api.server, "serve", started)
    monkeypatch.setattr(harness.report, "sweep", started)


def _refused(result: Any, prefix: str) -> str:
    """The message after ``prefix`` of a CLI refusal: exit 2, one line, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    head = f"harness: error: {prefix}: "
    assert lines[0].startswith(head), (lines[0], head)
    return lines[0][len(head):]


def _refused_http(answer: httpx.Response, param: str, raw: str) -> str:
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    head = f"{param}={raw!r}: "
    assert error.startswith(head) and "\n" not in error, (error, head)
    return error[len(head):]


def _nothing_written(data_dir: Path) -> None:
    assert not data_dir.exists()


# -- the same value at every door -----------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), SETTING_CASES,
                         ids=[f"{n}={v!r}" for n, v in SETTING_CASES])
def test_a_hostile_setting_gets_one_verdict_and_one_message_at_every_door(
    api: httpx.Client, env: dict[str, str], data_dir: Path, name: str, value: str
) -> None:
    flag, var, param, _ = SETTINGS[name]
    text = _text(name, value)
    long_flag = {"-n": "-n/--quantity"}.get(flag, flag)
    cores = {}
    # A flag.
    result = CliRunner().invoke(main, ["run", flag, text, "--no-progress"], env=env)
    cores["flag"] = _refused(result, f"{long_flag} {shown(text)}")
    # The environment variable ('' is unset there, as the README says; ' ' is refused).
    if text != "":
        result = CliRunner().invoke(main, ["runs"], env={**env, var: text})
        cores["env"] = _refused(result, f"{var}={text!r}")
    # The query parameter of POST /pedidos/generate, on a real server.
    answer = api.post("/pedidos/generate", params={param: text}, headers=AUTH)
    cores["http"] = _refused_http(answer, param, text)
    assert len(set(cores.values())) == 1, cores  # the same message, word for word
    core = cores["flag"]
    assert name in core or "tier mix" in core
    # A notebook parameter (`papermill -r`, or YAML text): refused too, naming it.
    with pytest.raises(ConfigError) as caught:
        notebook.settings(**{"quantity": 5, name: text})
    assert str(caught.value).startswith(f"notebook parameter {name}={text!r}: ")
    if name == "tier_mix":
        assert str(caught.value).endswith(core)
    _nothing_written(data_dir)
    assert api.get("/pedidos").json()["phase"] == "IDLE"


NOTEBOOK_VALUES = {  # what papermill -p / -y can hand a notebook parameter
    "quantity": [None, 5.0, True, math.nan, math.inf, 10**20, -5, 0, "5", "", [5]],
    "seed": [5.0, True, math.nan, 10**20, -1, "7"],
    "work_ms": [math.nan, math.inf, -math.inf, -1, True, "1", 10**400],
    "tier_mix": ["", " ", 5, "DIAMANTE=nan"],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in NOTEBOOK_VALUES.items() for v in vs],
                         ids=lambda v: repr(v)[:20])
def test_a_notebook_parameter_is_a_value_of_its_type_and_none_only_where_optional(
    name: str, value: Any
) -> None:
    """`papermill -y 'quantity: null'` ran 1,000,000 orders (the default) instead of refusing."""
    given = {"quantity": 5, name: value}
    with pytest.raises(ConfigError) as caught:
        notebook.settings(**given)
    assert str(caught.value).startswith(f"notebook parameter {name}={value!r}: "), caught.value
    assert "\n" not in str(caught.value)


def test_optional_notebook_parameters_still_take_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_SEED", raising=False)
    s = notebook.settings(quantity=5, seed=None, work_ms=None, chunk_size=None, tier_mix=None)
    assert s.quantity == 5 and s.seed is None


# Values commands and routes take besides settings: (flag args, query, notebook door).
OTHER = {
    "limit": (["runs", "--limit"], ("GET", "/pedidos/runs", "limit"), None),
    "jobs limit": (["queue", "jobs", "--limit"], ("GET", "/pedidos/queue/jobs", "limit"), None),
    "log lines": (["logs", "-n"], ("GET", "/pedidos/logs", "lines"), None),
    "close timeout": (["queue", "close", "--timeout"], ("POST", "/pedidos/queue/close", "timeoutS"),
                      None),
    "latest": (["export", "-o", "{tmp}/x.json", "--latest"], None,
               lambda v: results.select(Settings.from_env(environ={}), (), v)),
    "repeats": (["sweep", "-r"], None,
                lambda v: notebook.sweep_size(Settings.from_env(environ={}), {"quantity": [5]}, v, None)),
    "alpha": (["compare", "a", "b", "--alpha"], None, None),
    "factor": (["report", "--factor"], None, None),
    "port": (["serve", "--port"], None, None),
}
NUMBER_VALUED = {"close timeout", "alpha", "factor"}
OTHER_CASES = [(kind, value) for kind in OTHER
               for value in (BAD_NUMBERS if kind in NUMBER_VALUED else BAD_INTEGERS)]


@pytest.mark.parametrize(("kind", "value"), OTHER_CASES, ids=[f"{k}={v!r}" for k, v in OTHER_CASES])
def test_every_other_integer_and_number_is_read_by_the_same_rules(
    api: httpx.Client, env: dict[str, str], data_dir: Path, tmp_path: Path, kind: str, value: str
) -> None:
    """`serve --port` and `export --latest` took ' 5' and 3_000; `runs --limit`, `queue jobs
    --limit`, `export/report --latest` with 20 digits printed tracebacks (GET /pedidos/runs
    a 500); `--alpha nan` was taken; `queue close --timeout -1` exited 0."""
    args, query, library = OTHER[kind]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, [*args, value], env=env)
    flag = next(p for p in reversed(args) if p.startswith("-"))
    long_flag = {"-n": "-n/--lines", "-r": "-r/--repeats"}.get(flag, flag)
    core = _refused(result, f"{long_flag} {shown(value)}")
    if query is not None:
        method, path, param = query
        answer = api.request(method, path, params={param: value}, headers=AUTH)
        assert _refused_http(answer, param, value) == core
    if library is not None and value.strip():  # a notebook parameter: a Python value
        with pytest.raises(ConfigError):
            library(value)
    _nothing_written(data_dir)


@pytest.mark.parametrize(("value", "ok"), [("-1", False), ("0", False), ("301", False),
                                           ("300", True), ("0.5", True)])
def test_queue_close_timeout_means_the_same_on_the_command_line_and_over_http(
    api: httpx.Client, env: dict[str, str], value: str, ok: bool
) -> None:
    result = CliRunner().invoke(main, ["queue", "close", "--timeout", value], env=env)
    answer = api.post("/pedidos/queue/close", params={"timeoutS": value}, headers=AUTH)
    assert (result.exit_code == 0, answer.status_code == 200) == (ok, ok), (result.output, answer.text)


@pytest.mark.parametrize("value", ["", " ", ",", "waiting,,active", "bogus", "waiting,bogus"])
def test_job_states_are_one_comma_list_rule(api: httpx.Client, env: dict[str, str], value: str) -> None:
    """`queue jobs -t ''` exited 0 ("no  jobs") where the API said 400."""
    result = CliRunner().invoke(main, ["queue", "jobs", "-t", value], env=env)
    core = _refused(result, f"-t/--types {shown(value)}")
    assert _refused_http(api.get("/pedidos/queue/jobs", params={"types": value}), "types", value) == core
    ok = CliRunner().invoke(main, ["queue", "jobs", "-t", " wait , delayed "], env=env)
    assert ok.exit_code == 0 and api.get("/pedidos/queue/jobs", params={"types": "wait"}).status_code == 200


def test_accepted_values_are_accepted_at_every_door(api: httpx.Client, env: dict[str, str]) -> None:
    for value in ("5", "1000000", "1"):
        assert CliRunner().invoke(main, ["runs", "--limit", value], env=env).exit_code == 0
        assert api.get("/pedidos/runs", params={"limit": value}).status_code == 200
    for name, text, value in (("quantity", "5", 5), ("seed", "0", 0), ("work_ms", "1.5", 1.5),
                              ("work_ms", "1e3", 1000.0), ("work_ms", ".5", 0.5),
                              ("tier_mix", " DIAMANTE = 2 , BRONZE=1", " DIAMANTE = 2 , BRONZE=1"),
                              ("chunk_size", "-0", None)):
        if value is None:
            with pytest.raises(ConfigError):
                RULES[name].parse(text)
            continue
        parsed = RULES[name].parse(text)
        assert parsed == value.strip() if isinstance(value, str) else parsed == value
        assert Settings.from_env(environ={ENV_VARS[name][0]: text}).replace(quantity=5)
        assert getattr(notebook.settings(**{"quantity": 5, name: parsed}), name) == parsed


# -- one line, exit 2, before anything: the other refusals ------------------------------------

@pytest.mark.parametrize("output", ["", " ", "/etc/passwd/x", "{tmp}", "/proc/nope/x.json"])
def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(
    env: dict[str, str], data_dir: Path, tmp_path: Path, output: str
) -> None:
    """`export -o /etc/passwd/x` and `-o ''` printed tracebacks."""
    output = output.replace("{tmp}", str(tmp_path))
    for command in (["export"], ["report"], ["bench", "-n", "100"]):
        result = CliRunner().invoke(main, [*command, "-o", output], env=env)
        assert _refused(result, f"-o/--output {output!r}")
    _nothing_written(data_dir)


def test_an_output_file_that_fails_as_it_is_written_is_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`export -o /dev/full` (no space left) printed a traceback."""
    from harness.record import RunRecord
    from harness.store import open_store

    data = tmp_path / "data"
    store = open_store(Settings.from_env(environ={}, data_dir=data))
    try:
        store.save_run(RunRecord(run_id="r1", phase="DONE", parameters={"quantity": 5}), fenced=False)
    finally:
        store.close()
    result = CliRunner().invoke(main, ["export", "-o", "/dev/full"],
                                env={**env, "HARNESS_DATA_DIR": str(data)})
    assert _refused(result, "-o/--output '/dev/full'") == "cannot be written: No space left on device"


@pytest.mark.parametrize("url", ["REDIS://", "redis://", "redis:///0", "unix://",
                                 "redis://h:1/0?socket_timeout=soon"])
def test_every_unusable_redis_url_is_bad_input(env: dict[str, str], url: str) -> None:
    """REDIS:// (no host) was exit 1 ("does not answer" at localhost:6379), other bad URLs 2."""
    result = CliRunner().invoke(main, ["status"], env={**env, "REDIS_URL": url})
    assert _refused(result, f"REDIS_URL={url!r}").startswith(f"redis_url {url!r}")


def test_serve_on_a_busy_port_is_one_line_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    """It exited 3 after uvicorn's log lines."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "harness.cli", "serve", "--port", str(port)],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"harness: error: --port {port}: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_a_token_that_is_not_ascii_is_accepted_as_clients_send_it(api: httpx.Client) -> None:
    """HARNESS_API_TOKEN='tök': a client sending the UTF-8 header got 401."""
    for header in (f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode("latin-1")):
        answer = api.post("/pedidos/queue/resume", headers={"Authorization": header})
        assert answer.status_code == 200, answer.text
    for header in (b"Bearer tok", b"Bearer t\xc3\xb6k2", b"Basic t\xc3\xb6k"):
        assert api.post("/pedidos/queue/resume", headers={"Authorization": header}).status_code == 401


# -- the sweep's --param takes every run setting ------------------------------------------------

@pytest.mark.parametrize("name", SWEEPABLE)
def test_every_sweepable_setting_can_be_swept_the_seed_included(name: str) -> None:
    """`harness sweep -p seed=7` was a TypeError for any seed."""
    from harness.report import grid_points

    one = {"quantity": "7", "chunk_size": "7", "normal_batch_size": "7", "orders_per_job": "7",
           "concurrency": "1", "seed": "7", "tier_mix": "DIAMANTE=7", "work_ms": "7"}[name]
    grid = parse_grid([f"{name}={one}", "quantity=7"] if name != "quantity" else [f"{name}={one}"])
    points = grid_points(Settings.from_env(environ={}), grid, 2, "s")
    assert len(points) == 2
    assert all(getattr(s, name) == grid[name][0] for _, _, s in points)


def test_sweep_p_seed_reaches_the_sweep(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.report

    seen: dict[str, Any] = {}

    def sweep(settings: Settings, grid: Any, repeats: int, **kwargs: Any) -> Any:
        seen.update(grid=grid, repeats=repeats)
        raise SystemExit(0)

    monkeypatch.setattr(harness.report, "sweep", sweep)
    result = CliRunner().invoke(main, ["sweep", "-n", "100", "-p", "seed=7,8", "-r", "1",
                                       "--no-report"], env=env)
    assert result.exit_code == 0, result.output
    assert seen["grid"]["seed"] == [7, 8] and seen["repeats"] == 1


def test_a_none_in_a_grid_or_for_repeats_is_refused() -> None:
    s = Settings.from_env(environ={})
    for grid, repeats in (({"quantity": [None]}, 1), ({"quantity": [5]}, None), (None, 1),
                          ({"quantity": [5]}, 10**20)):
        with pytest.raises(ConfigError, match=r"^notebook parameter "):
            notebook.sweep_size(s, grid, repeats, None)  # type: ignore[arg-type]


def test_a_report_notebooks_numbers_are_checked_as_the_flags_are() -> None:
    from harness import compare

    for bad in (None, math.nan, 0, 10**20):
        with pytest.raises(ConfigError, match=r"^latest "):
            results.select(Settings.from_env(environ={}), (), bad)  # type: ignore[arg-type]
    for factor, alpha in ((None, 0.05), (math.nan, 0.05), (1.1, math.nan), (1.1, 0), (1.1, None)):
        with pytest.raises(ConfigError, match=r"^(factor|alpha) "):
            compare.compare([], [], factor, alpha)  # type: ignore[arg-type]


# -- point columns come from the run settings ---------------------------------------------------

def test_every_run_setting_has_a_column_and_splits_points() -> None:
    """record.COLUMNS was a list kept by hand: a run setting left out read None, and runs
    that differed in it were pooled as one point."""
    from harness import compare
    from harness.codec import camel
    from harness.record import COLUMN_NAMES, RunRecord

    assert {camel(name) for name in RUN_SHAPE} <= set(COLUMN_NAMES)
    base = {"max_orders": 10, "quantity": 5, "chunk_size": 5, "normal_batch_size": 5,
            "orders_per_job": 5, "concurrency": 1, "seed": 1, "tier_mix": "BRONZE=1", "work_ms": 0.0,
            "sweep_id": "s", "warmup": False}
    assert set(base) == set(RUN_SHAPE)
    other = {"max_orders": 11, "quantity": 6, "chunk_size": 6, "normal_batch_size": 6,
             "orders_per_job": 6, "concurrency": 2, "seed": 2, "tier_mix": "OURO=1", "work_ms": 1.0,
             "sweep_id": "t", "warmup": True}
    first = RunRecord(run_id="a", parameters=base)
    for name in RUN_SHAPE:
        assert first.row()[camel(name)] == base[name]
    for name in compare.POINT_SETTINGS:
        second = RunRecord(run_id="b", parameters={**base, name: other[name]})
        assert compare.Point.of(first.row()) != compare.Point.of(second.row()), name


def test_the_log_lines_rule_is_what_redis_keeps() -> None:
    from harness.logs import KEEP_LINES

    assert parsing.LOG_LINES.high == KEEP_LINES
