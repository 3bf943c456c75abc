"""Nothing replaces a run's record, and every answer about a run is its record's.

Before: a run given the id of a DONE run (`HARNESS_RUN_ID`, a notebook's ``run_id``)
replaced that run's record; ``../../etc/x`` was stored under an id no route could address;
`harness cancel` said "cancelled" of runs that ended DONE; a store that stopped taking
writes (its data folder made immutable) ended the run with exit 2 and nothing put aside;
50 refused `POST /pedidos/generate` started 26 processes. Each is a test here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import BackgroundRun, wait_for
from redis import Redis
from test_hangs import DEADLINE_S, Server, harness_env, one_line

from harness import history
from harness.cli import main
from harness.config import ConfigError, Settings
from harness.launch import RUN_ID_VAR
from harness.lock import LOCK_KEY
from harness.pipeline import Progress, run
from harness.record import RunRecord
from harness.state import STATE_KEY, Phase
from harness.store import open_store, sqlite_path


def stored(settings: Settings, run_id: str) -> RunRecord | None:
    store = open_store(settings)
    try:
        return store.get_run(run_id)
    finally:
        store.close()


def harness_run(settings: Settings, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**harness_env(settings.redis_address, settings.data_dir), RUN_ID_VAR: run_id}
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--no-progress", *args],
                          env=env, capture_output=True, text=True, timeout=DEADLINE_S * 4)


# -- run ids ---------------------------------------------------------------------------------

def test_a_run_id_that_is_taken_is_refused_and_the_record_stays(
    settings: Settings, redis_conn: Redis
) -> None:
    first = run(settings)
    assert first.phase == "DONE"
    before = stored(settings, first.run_id)
    assert before is not None

    with pytest.raises(ConfigError, match="is taken"):
        run(settings.replace(quantity=200), run_id=first.run_id)  # Python, a notebook
    done = harness_run(settings, first.run_id, "-n", "200")  # a launcher's HARNESS_RUN_ID
    assert done.returncode == 2, done.stderr
    assert "is taken" in one_line(done.stderr) and first.run_id in done.stderr

    after = stored(settings, first.run_id)
    assert after is not None and after.to_json() == before.to_json()  # untouched
    assert after.counts.generated == settings.quantity
    assert redis_conn.hget(STATE_KEY, "runId") == first.run_id.encode()  # live state too


@pytest.mark.parametrize("bad", ["../../etc/x", "", " ", "-rf", "a" * 65, "a b", "run/1",
                                 "\u00e9t\u00e9", "reset-1", "bench-2", ".hidden"])
def test_a_bad_run_id_is_refused_before_anything_is_written(
    settings: Settings, redis_conn: Redis, bad: str
) -> None:
    with pytest.raises(ConfigError, match="run id"):
        run(settings, run_id=bad)
    assert redis_conn.get(LOCK_KEY) is None and redis_conn.get(STATE_KEY) is None
    assert not Path(sqlite_path(settings)).exists()


def test_a_bad_harness_run_id_is_one_line_exit_2(settings: Settings) -> None:
    done = harness_run(settings, "../../etc/x", "-n", "100")
    assert done.returncode == 2
    assert f"{RUN_ID_VAR} '../../etc/x': a run id is" in one_line(done.stderr)


def test_the_run_notebook_refuses_a_taken_run_id(kernel_env: Settings, tmp_path: Path) -> None:
    import papermill

    from harness.report import NOTEBOOKS, execute

    first = run(kernel_env.replace(quantity=500))
    before = stored(kernel_env, first.run_id)
    assert before is not None
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(NOTEBOOKS / "run.ipynb", tmp_path / "out.ipynb",
                {"quantity": 200, "run_id": first.run_id})
    assert "is taken" in info.value.evalue
    assert info.value.traceback == [f"{info.value.ename}: {info.value.evalue}"]  # one line
    after = stored(kernel_env, first.run_id)
    assert after is not None and after.to_json() == before.to_json()


# -- cancel: the answer is the record's ---------------------------------------------------------

def test_a_cancel_that_comes_too_late_says_the_run_finished_done(settings: Settings) -> None:
    """The run has recorded DONE and still holds its lock (its last progress report) when
    the cancel arrives: the cancel waits for it, reads the record, and says "too late"."""
    running = BackgroundRun(settings, hold=Phase.DONE)
    assert running.reached.wait(60), "the run did not reach DONE"
    env = harness_env(settings.redis_address, settings.data_dir)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "cancel", "--json"], env=env,
                          capture_output=True, text=True, timeout=DEADLINE_S * 2)
    record = running.join()
    assert record.phase == "DONE"
    assert done.returncode == 3, done.stderr
    answer = json.loads(done.stdout)
    assert answer["cancelled"] is False and answer["tooLate"] is True
    assert answer["outcome"] == "DONE" and answer["runId"] == record.run_id
    assert answer["message"].startswith(f"too late: run {record.run_id} finished DONE")
    assert answer["record"]["phase"] == "DONE"


# -- a store that stops taking writes ------------------------------------------------------------

def _chattr(flag: str, *paths: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return done.returncode == 0


def test_a_store_that_stops_taking_writes_puts_the_last_record_aside(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-run the data folder is made immutable, and so is SQLite's write-ahead log (every
    write goes there): the run ends ERROR, its last record is retried, then put aside in
    pending-records/ (made when the run started, so still writable), and the next command
    saves it. Before: exit 2 at once (reopening the store in an unwritable folder is "bad
    input"), nothing put aside, and the history said GENERATING."""
    probe = settings.data_dir / "probe"
    probe.parent.mkdir(parents=True)
    probe.touch()
    if not _chattr("+i", probe):
        pytest.skip("chattr +i does not work here (not root, or not a filesystem that has it)")
    _chattr("-i", probe)
    probe.unlink()
    monkeypatch.setattr(history, "FINAL_DEADLINE_S", 1.0)
    slow = settings.replace(quantity=4_000, orders_per_job=200, work_ms=1.0, store_timeout_s=0.5)
    wal = Path(sqlite_path(slow) + "-wal")
    frozen: list[Path] = []

    def freeze(p: Progress) -> None:
        if p.phase is Phase.WAITING_VIP_DRAIN and not frozen:
            frozen.extend([wal, slow.data_dir])
            assert _chattr("+i", *frozen)

    try:
        record = BackgroundRun(slow, freeze).join(timeout=120)
    finally:
        _chattr("-i", *frozen)
    assert frozen, "the run never reached WAITING_VIP_DRAIN"
    assert record.phase == "ERROR" and "store unavailable" in (record.error or "")
    aside = history.aside_dir(slow) / f"{record.run_id}.json"
    assert aside.exists() and json.loads(aside.read_text())["phase"] == "ERROR"
    before = stored(slow, record.run_id)
    assert before is not None and before.phase != "ERROR"  # its last checkpoint
    shown = CliRunner().invoke(main, ["runs", "--data-dir", str(slow.data_dir),
                                      "--redis-url", slow.redis_address])
    assert shown.exit_code == 0, shown.output
    assert f"saved the ERROR record of run {record.run_id}" in shown.output
    after = stored(slow, record.run_id)
    assert after is not None and after.phase == "ERROR" and not aside.exists()


# -- the API refuses before it starts anything ------------------------------------------------

def test_fifty_generates_at_once_start_one_process(settings: Settings) -> None:
    server = Server(harness_env(settings.redis_address, settings.data_dir),
                    settings.data_dir.parent / "serve.log")
    try:
        def generate(_: int) -> int:  # a run that lasts (20 s of work): the 49 find it on
            return httpx.post(f"{server.base}/pedidos/generate",
                              params={"quantity": 4_000, "workMs": 10, "ordersPerJob": 100},
                              timeout=DEADLINE_S * 2).status_code

        with ThreadPoolExecutor(50) as pool:
            statuses = sorted(pool.map(generate, range(50)))
        assert statuses == [202] + [409] * 49, statuses
        logs = list((settings.data_dir / "runs").glob("*.log"))
        assert len(logs) == 1, logs  # one child process started, one log

        cancelled = httpx.post(f"{server.base}/pedidos/cancel", timeout=DEADLINE_S * 2).json()
        assert cancelled["cancelled"] is True and cancelled["outcome"] == "ABORTED", cancelled

        def ended() -> bool:
            health = httpx.get(f"{server.base}/pedidos/health/queue", timeout=DEADLINE_S).json()
            return health["coordinator"] is None

        wait_for(ended, "the run to end", timeout=120)
    finally:
        server.stop()
