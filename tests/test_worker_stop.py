"""Workers stop promptly on every redis-py line the project's bounds allow.

redis-py 8.2.0 changed how its pub/sub thread stops, and every worker pool then waited 30 s
to stop (see :mod:`harness.listener`). Each line the bounds in pyproject.toml allow is
installed apart (``pip install --target``, cached under ``.cache/redis-lines/``) and put
first on the path of real ``harness`` processes: a run's pool and a ``harness worker`` must
be gone within 5 s of being asked to stop. That is a hang check, not a speed claim (a stop
takes milliseconds); the runs' own figures say how long.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import wait_for
from packaging.requirements import Requirement
from packaging.version import Version
from redis import Redis
from rq import Worker

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "redis-lines"
# The newest release of each redis-py line (major.minor) the bounds allow. A test below
# fails when the bounds change and this list does not.
LINES = ("7.4.1", "8.0.1", "8.1.0", "8.2.0")
STOP_DEADLINE_S = 5.0


def redis_bound() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return next(r for r in map(Requirement, project["dependencies"]) if r.name == "redis")


def test_the_lines_tested_are_the_lines_the_bounds_allow() -> None:
    """Every line tested is allowed, and neither the next line up nor the one below is."""
    spec = redis_bound().specifier
    assert all(spec.contains(v) for v in LINES), f"{spec} excludes one of {LINES}"
    newest, oldest = Version(LINES[-1]), Version(LINES[0])
    assert not spec.contains(f"{newest.major}.{newest.minor + 1}.0"), f"{spec} allows an untested line"
    assert not spec.contains(f"{oldest.major}.{oldest.minor - 1}.99"), f"{spec} allows an untested line"


def installed(version: str) -> Path:
    """A folder holding redis-py ``version`` alone, installed once and reused."""
    target = CACHE / version
    if not (target / "redis" / "__init__.py").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--target", str(target), f"redis=={version}"],
                       check=True, timeout=300, capture_output=True)
    return target


def line_env(version: str, redis_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGO_URI", "DATABASE_URL")}
    env.update(PYTHONPATH=os.pathsep.join([str(installed(version)), str(ROOT)]),
               REDIS_URL=redis_url, HARNESS_DATA_DIR=str(data_dir))
    got = subprocess.run([sys.executable, "-c", "import redis; print(redis.__version__)"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert got == version, f"the child imported redis {got}, not {version}"
    return env


@pytest.mark.parametrize("version", LINES)
def test_a_runs_worker_pool_stops_within_seconds_of_done(version: str, redis_url: str,
                                                         tmp_path: Path) -> None:
    env = line_env(version, redis_url, tmp_path / "data")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-n", "1000", "--json",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    wall_s = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout)
    assert record["phase"] == "DONE"
    overhead = record["overhead"]
    assert overhead["since"] == "process"
    assert overhead["poolStopMs"] is not None and overhead["poolStopMs"] < STOP_DEADLINE_S * 1000, overhead
    assert overhead["afterMs"] < STOP_DEADLINE_S * 1000, overhead
    assert "did not stop" not in proc.stderr
    # The record's wall time is the command's, up to the record being saved.
    assert overhead["wallMs"] <= wall_s * 1000
    assert overhead["wallMs"] == pytest.approx(
        overhead["beforeMs"] + overhead["runMs"] + overhead["afterMs"], abs=1.0)


@pytest.mark.parametrize("version", LINES)
def test_harness_worker_stops_within_seconds_of_sigterm(version: str, redis_url: str,
                                                        redis_conn: Redis, tmp_path: Path) -> None:
    env = line_env(version, redis_url, tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "worker", "-c", "2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(Worker.all(connection=redis_conn)) == 2 or proc.poll() is not None,
                 "2 workers registered", timeout=60)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"harness worker on redis-py {version} still running "
                        f"{STOP_DEADLINE_S} s after SIGTERM")
        stopped_s = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert Worker.all(connection=redis_conn) == [], "a worker stopped without unregistering"
    print(f"redis-py {version}: harness worker stopped {stopped_s * 1000:.0f} ms after SIGTERM")
