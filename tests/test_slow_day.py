"""scripts/slow-day: a command runs beside busy loops capped in a cgroup, and nothing of them
outlives the script (a test must leave no process behind, even when the script is killed)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import wait_for

SCRIPT = Path(__file__).parents[1] / "scripts" / "slow-day"
CGROUPS = (Path("/sys/fs/cgroup/cgroup.controllers"), Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"))

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not any(p.exists() for p in CGROUPS),
    reason="needs root and a cgroup cpu controller")


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie; a process reaped meanwhile is not alive."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def _group_of(pid: int) -> list[Path]:
    """Where slow-day ``pid`` made its group (cgroup v2 or v1), if it is still there."""
    name = f"harness-slow-day-{pid}"
    return [g for g in (Path("/sys/fs/cgroup") / name, Path("/sys/fs/cgroup/cpu") / name)
            if g.exists()]


def _busy_loops() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [])[-1:] == ["while True: pass"]]


def test_a_command_runs_beside_capped_busy_loops_and_its_status_is_kept(tmp_path: Path) -> None:
    seen = tmp_path / "procs"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steal", "0.2", "--",
         "sh", "-c", f'cat "$SLOW_DAY_CGROUP/cgroup.procs" > {seen}; exit 7'],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 7, result.stderr
    group = re.search(r"busy loop\(s\) in (\S+), capped at ([\d.]+) CPU", result.stderr)
    assert group, result.stderr
    assert float(group[2]) == pytest.approx(0.2 * (os.cpu_count() or 1), abs=0.01)
    pids = [int(line) for line in seen.read_text().split()]
    assert len(pids) == (os.cpu_count() or 1)  # one loop per core, in the group while it ran
    assert not Path(group[1]).exists()  # the group is gone
    assert not [p for p in pids if _pid_alive(p)]


def test_the_busy_loops_die_with_the_script_even_when_it_is_killed() -> None:
    script = subprocess.Popen([sys.executable, str(SCRIPT), "--", "sleep", "60"],
                              stderr=subprocess.PIPE, text=True)
    children: list[psutil.Process] = []
    try:
        assert script.stderr is not None
        assert "busy loop(s)" in script.stderr.readline()
        wait_for(lambda: any(c.cmdline()[:1] == ["sleep"]
                             for c in psutil.Process(script.pid).children()), "the command", 30)
        children = psutil.Process(script.pid).children()
        loops = [c for c in children if c.cmdline()[-1:] == ["while True: pass"]]
        assert len(loops) == (os.cpu_count() or 1)
        script.send_signal(signal.SIGKILL)
        script.wait(30)
        wait_for(lambda: not [p for p in loops if _alive(p)],
                 "the busy loops to die with the script", 30)
        # Its group outlived it (SIGKILL skips the cleanup); the next slow-day removes it.
        assert _group_of(script.pid)
        subprocess.run([sys.executable, str(SCRIPT), "--", "true"], capture_output=True,
                       timeout=60, check=True)
        assert not _group_of(script.pid)
    finally:
        for child in children:  # the command itself outlives a SIGKILLed script, as under nice
            with contextlib.suppress(psutil.Error):
                child.kill()
        script.kill()
        script.wait(30)


def test_bad_input_is_refused_before_anything_starts() -> None:
    before = len(_busy_loops())
    for args in (["--steal", "1.5", "--", "true"], ["--steal", "x", "--", "true"], [],
                 ["--period-ms", "0", "--", "true"]):
        result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2 and "error:" in result.stderr, (args, result.stderr)
    assert len(_busy_loops()) == before
