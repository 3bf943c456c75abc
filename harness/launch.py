"""Starting a run in a child process of its own, from a ``Settings``: the one launcher.

``harness bench`` (each measured run is its own process, so its memory is its own), sweeps
(each point's notebook kernel) and the HTTP API (a run must outlive the request, and the
server) all start runs this way. Settings cross the boundary only through
:meth:`Settings.to_env`, the exact inverse of :meth:`Settings.from_env`, so no setting is
forwarded by hand and none is lost (a sweep given ``--mongo-uri`` as a flag once ran its
points on SQLite because only some variables were copied).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from redis.exceptions import RedisError

from harness.config import ENV_VARS, Settings, redact
from harness.errors import Failed, RunActive

if TYPE_CHECKING:
    from redis import Redis

    from harness.lock import RunLock
    from harness.state import RunState

# Every variable Settings reads, plus HARNESS_RUN_ID (see start_run): a child takes these
# from its settings only, never from the parent's environment.
SETTING_VARS = frozenset(var for var, _doc in ENV_VARS.values())
RUN_ID_VAR = "HARNESS_RUN_ID"
# One launch at a time (launch_detached): held from before the child starts until it holds
# the run lock, or has failed to.
LAUNCH_KEY = "harness:launching"
# How much of a child's output is read back for its error line: its end.
OUTPUT_TAIL_BYTES = 64 * 1024


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without any setting of its own, plus
    ``settings`` with absolute paths, so a child in another folder finds the same data. No
    child needs the HTTP API's token, so none gets it."""
    base = os.environ if base is None else base
    kept = {k: v for k, v in base.items() if k not in SETTING_VARS and k != RUN_ID_VAR}
    settings = dataclasses.replace(settings, api_token=None)
    return {**kept, **settings.with_absolute_paths().to_env()}


def run_command(*args: str) -> list[str]:
    """``harness run`` with ``args``, as this interpreter runs it (no PATH lookup)."""
    return [sys.executable, "-m", "harness.cli", "run", *args]


@dataclass
class LaunchedRun:
    """A run started in a child process; ``run_id`` is known before the child starts."""

    run_id: str
    process: subprocess.Popen[str]
    output: Path | None

    def wait_started(self, is_started: Any, timeout: float = 30.0, poll: float = 0.02) -> None:
        """Return once ``is_started(run_id)`` holds (the run took the lock); raise the
        child's own error if it exits first, or Failed after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not is_started(self.run_id):
            if self.process.poll() is not None:
                raise child_error(self.last_error(), self.process.returncode)
            if time.monotonic() > deadline:
                raise Failed(f"run {self.run_id} did not start within {timeout:g}s")
            time.sleep(poll)

    def reap_in_background(self) -> None:
        """Wait for the child in a daemon thread, so that a long-lived parent (the HTTP
        server) leaves no zombie behind: a zombie coordinator still looks alive to the lock's
        dead-process check, which would keep its lock from being taken over at once."""
        threading.Thread(target=self.process.wait, name=f"reap-{self.run_id}", daemon=True).start()

    def last_error(self) -> str:
        """The child's last ``harness: error:`` line, or its last line of output."""
        if self.output is None or not self.output.exists():
            return ""
        with open(self.output, "rb") as f:  # its end only: a child may have written much
            f.seek(max(0, f.seek(0, 2) - OUTPUT_TAIL_BYTES))
            return last_error_line(f.read().decode("utf-8", "replace"))


def start_run(
    settings: Settings, run_id: str, args: Sequence[str] = (), output: Path | None = None,
    detach: bool = False,
) -> LaunchedRun:
    """Start ``harness run`` for ``settings`` in a child process and return at once.

    ``run_id`` becomes the run's id (through HARNESS_RUN_ID). The child writes its output to
    ``output`` (else it is discarded). With ``detach`` it runs in a session of its own: it
    outlives its parent and a Ctrl-C aimed at the parent's terminal.
    """
    env = {**child_env(settings), RUN_ID_VAR: run_id}
    sink: IO[str] | int = subprocess.DEVNULL
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        sink = open(output, "w")  # noqa: SIM115 - the child holds it; closed below
    try:
        process = subprocess.Popen(
            run_command("--json", "--no-progress", *args), env=env, stdout=sink,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            start_new_session=detach,
        )
    finally:
        if not isinstance(sink, int):
            sink.close()
    return LaunchedRun(run_id, process, output)


def launch_detached(
    settings: Settings, conn: Redis, output_dir: Path | None = None, timeout: float = 30.0,
) -> LaunchedRun:
    """Start a run in a detached child (it outlives its parent) and return once it holds the
    lock and has put its live state in Redis: the HTTP API's ``POST /pedidos/generate``.

    Refused (RunActive) while a live run holds the lock; a lock whose coordinator provably
    died is left for the child to take over. If the child exits first because another
    launch won the race for the lock, that is RunActive too, decided by the lock itself,
    not by the child's words. Its output goes to ``output_dir/<run id>.log`` (default: the
    data folder's ``runs/``).

    Launches are one at a time, decided in Redis *before* any process starts (LAUNCH_KEY,
    taken with SET NX): of 50 simultaneous requests, one starts a child and 49 are refused
    at once. Before, each request that found the lock free started a child that then lost
    the race for the lock: 26 processes and 26 logs for one run.
    """
    from harness.lock import RELEASE_LOCK, RunLock
    from harness.record import new_run_id
    from harness.state import RunState

    state, lock = RunState(conn), RunLock(conn)
    run_id = new_run_id()
    if not conn.set(LAUNCH_KEY, run_id, nx=True, ex=int(timeout) + 10):
        other = conn.get(LAUNCH_KEY)
        name = other.decode() if isinstance(other, bytes) else other
        raise RunActive(f"run {name or '?'} is being started; wait for it or cancel it first")
    try:
        return _launch(settings, conn, run_id, state, lock, output_dir, timeout)
    finally:
        with contextlib.suppress(RedisError):  # else it expires by itself
            conn.register_script(RELEASE_LOCK)(keys=[LAUNCH_KEY], args=[run_id])


def _launch(settings: Settings, conn: Redis, run_id: str, state: RunState, lock: RunLock,
            output_dir: Path | None, timeout: float) -> LaunchedRun:
    """:func:`launch_detached` once it holds LAUNCH_KEY."""
    if (holder := lock.holder()) is not None and not holder.is_dead():
        raise RunActive(f"run {holder.run_id} (coordinator {holder.host}:{holder.pid}) is "
                        "active; wait for it or cancel it first", holder)
    output = (output_dir or settings.data_dir / "runs") / f"{run_id}.log"
    launched = start_run(settings, run_id, output=output, detach=True)
    launched.reap_in_background()

    def started(rid: str) -> bool:
        # The live state is the run's (it holds the lock, or held it if already done), so
        # GET /pedidos right after shows this run and not the last one.
        return state.get("runId")[0] == rid

    try:
        launched.wait_started(started, timeout)
    except Failed:
        if launched.process.poll() is None:  # too slow to start: it must not start later
            launched.process.terminate()
        holder = lock.holder()
        if holder is not None and holder.run_id != run_id:
            raise RunActive(f"run {holder.run_id} (coordinator {holder.host}:{holder.pid}) "
                            "took the lock first; wait for it or cancel it first", holder) from None
        raise
    return launched


def run_in_child(settings: Settings, args: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``harness run --json`` for ``settings`` in a child process, wait, and return its
    record; raise the child's own error when it printed no record."""
    done = subprocess.run(run_command("--json", "--no-progress", *args),
                          env=child_env(settings), capture_output=True, text=True)
    try:
        record: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise child_error(last_error_line(done.stderr), done.returncode) from None
    return record


def last_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("harness: error: ")]
    line = errors[-1].removeprefix("harness: error: ") if errors else (lines[-1] if lines else "")
    return redact(line[:500])


def child_error(message: str, returncode: int | None) -> Failed:
    """The child's error line as a Failed (a caller that must tell a lost race for the lock
    from other failures looks at the lock, not at the text)."""
    return Failed(message or f"the run's process exited with code {returncode}")
