"""Starting a run in a child process of its own, from a ``Settings``: the one launcher.

``harness bench`` (each measured run is its own process, so its memory is its own), sweeps
(each point's notebook kernel) and the HTTP API (a run must outlive the request, and the
server) all start runs this way. Settings cross the boundary only through
:meth:`Settings.to_env`, the exact inverse of :meth:`Settings.from_env`, so no setting is
forwarded by hand and none is lost (a sweep given ``--mongo-uri`` as a flag once ran its
points on SQLite because only some variables were copied).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.config import ENV_VARS, Settings, redact
from harness.errors import Failed

# Every variable Settings reads, plus HARNESS_RUN_ID (see start_run): a child takes these
# from its settings only, never from the parent's environment.
SETTING_VARS = frozenset(var for var, _doc in ENV_VARS.values())
RUN_ID_VAR = "HARNESS_RUN_ID"


def child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without any setting of its own, plus
    ``settings`` with absolute paths, so a child in another folder finds the same data."""
    base = os.environ if base is None else base
    kept = {k: v for k, v in base.items() if k not in SETTING_VARS and k != RUN_ID_VAR}
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

    def last_error(self) -> str:
        """The child's last ``harness: error:`` line, or its last line of output."""
        if self.output is None or not self.output.exists():
            return ""
        return last_error_line(self.output.read_text(errors="replace"))


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
