"""Every count, size and file read has a bound, checked before the work starts; beyond it,
one line and exit 2 (HTTP 400), never a machine brought down.

Before: `harness compare /dev/zero x` and `harness sweep -r 99999999999999999999` grew to
23.5 GB until the kernel killed them; a results file nested 100,000 levels deep was a
RecursionError traceback; ten `GET /pedidos/logs?lines=1` of one 100 MB log line took the
server to 1.27 GB. The bounds are in harness.bounds (and harness.parsing for counts).
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from click.testing import CliRunner
from redis import Redis
from test_hangs import DEADLINE_S, Server, harness_env

from harness import bounds, logs
from harness.cli import main
from harness.config import Settings
from harness.pipeline import run


def invoke(settings: Settings, *args: str) -> tuple[int, str, float]:
    """`harness ARGS` in this process, with the test's Redis and data folder: exit code,
    stderr and how long it took."""
    started = time.monotonic()
    done = CliRunner().invoke(main, list(args), env={
        "REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(settings.data_dir)})
    return done.exit_code, done.stderr, time.monotonic() - started


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- files read: results files -----------------------------------------------------------------

def test_compare_dev_zero_is_refused_before_reading(settings: Settings) -> None:
    code, err, took = invoke(settings, "compare", "/dev/zero", "x")
    assert code == 2 and took < DEADLINE_S
    assert "/dev/zero: not a regular file" in one_error_line(err)


def test_a_results_file_above_the_size_bound_is_refused(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bounds, "MAX_RESULTS_BYTES", 1_000)  # a small bound, a small file
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"format": "harness-results", "version": 1, "runs": [],
                               "padding": "x" * 2_000}))
    code, err, _ = invoke(settings, "compare", str(big), str(big))
    assert code == 2 and "above the 1,000 bytes such a file may hold" in one_error_line(err)


@pytest.mark.parametrize("levels", [100, 100_000])
def test_a_results_file_nested_too_deep_is_one_line(
    settings: Settings, tmp_path: Path, levels: int
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * levels + "]" * levels)
    code, err, _ = invoke(settings, "compare", str(deep), str(deep))
    assert code == 2
    assert f"nested deeper than {bounds.MAX_JSON_DEPTH} levels" in one_error_line(err)


def test_an_export_above_the_size_bound_is_not_written(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What could not be read back is not written either."""
    run(settings.replace(quantity=200))
    monkeypatch.setattr(bounds, "MAX_RESULTS_BYTES", 1_000)
    out = tmp_path / "export.json"
    code, err, _ = invoke(settings, "export", "-o", str(out))
    assert code == 2 and "a results file may hold" in one_error_line(err)
    assert not out.exists()


# -- counts -------------------------------------------------------------------------------------

def test_sweep_repeats_beyond_the_bound_are_refused_at_once(settings: Settings) -> None:
    code, err, took = invoke(settings, "sweep", "-r", "99999999999999999999", "--no-report")
    assert code == 2 and took < DEADLINE_S
    assert "-r/--repeats" in one_error_line(err)


def test_a_sweep_of_too_many_runs_is_refused_before_any_point_is_built(settings: Settings) -> None:
    seeds = ",".join(str(n) for n in range(1, 102))  # 101 points x 100 repeats
    code, err, took = invoke(settings, "sweep", "-p", f"seed={seeds}", "-c", "1", "-r", "100",
                             "--no-report")
    assert code == 2 and took < DEADLINE_S
    line = one_error_line(err)
    assert "would make 10,100 runs" in line and f"at most {bounds.MAX_SWEEP_RUNS:,}" in line


# -- log lines read back ------------------------------------------------------------------------

HUGE = 100 * 1024 * 1024


def test_a_100_mb_log_line_is_read_back_cut_and_the_server_stays_small(
    settings: Settings, redis_conn: Redis
) -> None:
    redis_conn.rpush(logs.LOG_KEY, "first line", b"y" * HUGE)
    redis_conn.incrby(logs.LOG_COUNT_KEY, 2)
    server = Server(harness_env(settings.redis_address, settings.data_dir),
                    settings.data_dir.parent / "serve.log")
    try:
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss
        peak, done = [before], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(process.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()

        def read(_: int) -> list[str]:
            answer = httpx.get(f"{server.base}/pedidos/logs", params={"lines": 1},
                               timeout=DEADLINE_S * 2)
            assert answer.status_code == 200, answer.text[:200]
            return list(answer.json()["lines"])

        try:
            with ThreadPoolExecutor(10) as pool:
                answers = list(pool.map(read, range(10)))
        finally:
            done.set()
            sampler.join()
        for lines in answers:
            assert len(lines) == 1
            assert lines[0].startswith("y" * 100) and lines[0].endswith(f"[line cut: {HUGE} bytes]")
            assert len(lines[0]) < bounds.MAX_LOG_LINE + 100
        # Before: each request held the whole line, several times over (1.27 GB for ten).
        assert max(peak) - before < HUGE, f"the server grew by {(max(peak) - before) / 2**20:.0f} MB"
    finally:
        server.stop()
    code, _, _ = invoke(settings, "logs", "-n", "2")
    assert code == 0


def test_a_log_file_tail_is_bounded_in_memory_and_refuses_what_is_not_a_file(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "big.log"
    with open(log, "wb") as f:
        f.write(b"an early line\n")
        f.write(b"z" * (40 * 1024 * 1024) + b"\n")  # longer than the part of a file read
        f.write(b"the last line\n")
    tracemalloc.start()
    try:
        shown = logs.tail(log, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shown[-1] == "the last line"
    assert shown[0].startswith("[line begun earlier] zzz") and "[line cut:" in shown[0]
    assert peak < 2 * bounds.MAX_TAIL_BYTES, f"{peak / 2**20:.0f} MB to read a tail"
    code, err, _ = invoke(settings, "logs", "--log-file", "/dev/zero", "-n", "1")
    assert code == 2 and "not a regular file" in one_error_line(err)
