"""Nothing hangs on a Redis that accepts but does not answer, nor on a client that sends
half a request.

A Redis frozen with SIGSTOP (its kernel still accepts connections, nothing ever replies) and
a ``rediss://`` URL pointed at a plain Redis (the TLS handshake never completes) used to
hang `harness status` for minutes and ``GET /pedidos`` for 40 s+. Now every command ends in
one line, exit 1, and every API route that needs Redis answers 503, each well inside a
deadline that only says "it did not hang" (the figures are in harness.connection and
harness.api.limits). A frozen Redis is always thawed and stopped, and every process a test
starts is stopped, whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port, start_redis, wait_for
from redis import Redis

from harness import connection
from harness.api import limits
from harness.config import ENV_VARS
from harness.connection import redis_client
from harness.worker import HarnessWorker

# Generous: a command or route that does not hang ends within seconds (the command timeout
# is 2 s); these only fail on a hang.
DEADLINE_S = 30.0


class Frozen:
    """A private redis-server that the test freezes (SIGSTOP) and that is thawed (SIGCONT)
    and stopped at the end, whatever happens."""

    def __init__(self, folder: Path) -> None:
        self.proc, self.url = start_redis(folder)

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def frozen(tmp_path: Path) -> Iterator[Frozen]:
    redis = Frozen(tmp_path / "frozen-redis")
    try:
        yield redis
    finally:
        redis.stop()


def harness_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    """This process's environment without any harness setting, plus Redis and a data folder."""
    settings_vars = {var for var, _ in ENV_VARS.values()}
    base = {k: v for k, v in os.environ.items() if k not in settings_vars and k != "HARNESS_RUN_ID"}
    return {**base, "REDIS_URL": redis_url, "HARNESS_DATA_DIR": str(data_dir)}


def harness(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env,
                          capture_output=True, text=True, timeout=DEADLINE_S * 2)
    return done, time.monotonic() - started


def one_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# -- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["status"], ["health"], ["cancel"], ["queue", "status"], ["reset"],
    ["run", "-n", "10", "--no-progress"],
], ids=lambda c: "-".join(c[:2]))
def test_a_frozen_redis_ends_a_command_in_one_line(
    frozen: Frozen, tmp_path: Path, command: list[str]
) -> None:
    frozen.freeze()
    done, took = harness(harness_env(frozen.url, tmp_path / "data"), *command)
    assert done.returncode == 1, done.stderr
    assert took < DEADLINE_S, f"{command} took {took:.1f} s"
    line = one_line(done.stderr if command != ["health"] else done.stdout)
    assert "does not answer" in line, line


def test_rediss_to_a_plain_redis_ends_in_one_line(redis_url: str, tmp_path: Path) -> None:
    """The TLS handshake a plain Redis never completes is bounded like a reply."""
    url = redis_url.replace("redis://", "rediss://", 1)
    done, took = harness(harness_env(url, tmp_path / "data"), "status")
    assert done.returncode == 1 and took < DEADLINE_S, (done.stderr, took)
    assert "does not answer" in one_line(done.stderr)


# -- clients: commands time out, blocking reads keep their own wait ---------------------------

def test_a_blocking_read_keeps_its_wait_and_a_command_does_not(
    redis_url: str, frozen: Frozen, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the command timeout at 0.3 s, a BLPOP that waits 1 s is not cut short (a worker
    idling for a job), and a command to a frozen Redis fails instead of waiting for ever."""
    monkeypatch.setattr(connection, "COMMAND_TIMEOUT_S", 0.3)
    live = redis_client(redis_url)
    started = time.monotonic()
    assert live.blpop(["nothing-here"], timeout=1) is None  # its own wait, then None
    assert time.monotonic() - started >= 0.9
    assert live.get("nothing-here") is None  # the connection is fine afterwards
    live.close()

    stuck = redis_client(frozen.url)
    frozen.freeze()
    started = time.monotonic()
    with pytest.raises(Exception, match="Timeout"):
        stuck.ping()
    assert time.monotonic() - started < DEADLINE_S
    stuck.close()


def test_a_worker_keeps_the_command_timeout(redis_url: str) -> None:
    """RQ raises a worker connection's socket timeout to 415 s (above its BLPOP wait); the
    harness's workers keep the command timeout, since their blocking reads have their own."""
    conn = redis_client(redis_url)
    worker = object.__new__(HarnessWorker)  # no __init__: it would tie this process to its parent
    worker.worker_ttl = 420  # RQ's default, which the rule reads
    kept = HarnessWorker._set_connection(worker, conn)
    assert kept.connection_pool.connection_kwargs["socket_timeout"] == connection.COMMAND_TIMEOUT_S
    plain = Redis.from_url(redis_url)  # a connection the harness did not make: RQ's rule
    assert HarnessWorker._set_connection(worker, plain).connection_pool.connection_kwargs[
        "socket_timeout"] > 60
    conn.close()
    plain.close()


# -- the HTTP API --------------------------------------------------------------------------

class Server:
    """`harness serve` in a process of its own; stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.cli", "serve", "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log
        wait_for(self._answers, "harness serve to answer", timeout=60)

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.base}/pedidos", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def server_on(tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    started: list[Server] = []

    def start(redis_url: str) -> Server:
        server = Server(harness_env(redis_url, tmp_path / "data"), tmp_path / "serve.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# Every route that needs Redis; each answers 503 while Redis is frozen.
REDIS_ROUTES = [
    ("GET", "/pedidos"), ("GET", "/pedidos/health/queue"), ("GET", "/metrics"),
    ("GET", "/pedidos/queue/status"), ("GET", "/pedidos/queue/jobs"),
    ("POST", "/pedidos/generate?quantity=10"), ("POST", "/pedidos/cancel"),
    ("POST", "/pedidos/reset"), ("POST", "/pedidos/queue/pause"),
    ("POST", "/pedidos/queue/clean?state=failed"), ("POST", "/pedidos/queue/close"),
]


def test_every_route_answers_503_while_redis_is_frozen(frozen: Frozen, server_on) -> None:
    server = server_on(frozen.url)
    frozen.freeze()

    def ask(route: tuple[str, str]) -> tuple[tuple[str, str], int, float, str]:
        started = time.monotonic()
        answer = httpx.request(route[0], server.base + route[1], timeout=DEADLINE_S)
        return route, answer.status_code, time.monotonic() - started, answer.text

    try:
        with ThreadPoolExecutor(len(REDIS_ROUTES)) as pool:
            answers = list(pool.map(ask, REDIS_ROUTES))
    finally:
        frozen.thaw()
    for route, status, took, text in answers:
        assert status == 503 and "does not answer" in text, (route, status, text)
        assert took < DEADLINE_S, (route, took)
    assert not (Path(server.log).parent / "data" / "runs").exists()  # generate started nothing
    assert httpx.get(f"{server.base}/pedidos", timeout=DEADLINE_S).status_code == 200  # back


def _closed_by_server(sock: socket.socket) -> bytes:
    """What the server sent before it closed the connection (b"" if it reset it, as it may
    when unread bytes are left); raises socket.timeout if it never closes it."""
    sock.settimeout(limits.HEAD_TIMEOUT_S + DEADLINE_S)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_partial_and_oversized_request_heads_are_cut_off(redis_url: str, server_on) -> None:
    """Connections that never finish their request head are closed after the header timeout
    (408), one whose head grows past the limit at once (431); meanwhile the server answers."""
    server = server_on(redis_url)
    partial = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /pedidos HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        partial.append(sock)
    try:
        assert httpx.get(f"{server.base}/pedidos", timeout=DEADLINE_S).status_code == 200
        with socket.create_connection(("127.0.0.1", server.port)) as big:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                big.sendall(b"GET /pedidos HTTP/1.1\r\nHost: test\r\nX-Big: "
                            + b"a" * (limits.MAX_HEAD_BYTES + 1024))
            answer = _closed_by_server(big)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        for sock in partial:
            assert _closed_by_server(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in partial:
            sock.close()


def _commands(conn: Redis) -> int:
    return int(conn.info("stats")["total_commands_processed"])


@pytest.mark.parametrize("path", ["/pedidos/stream", "/pedidos/logs/stream"])
def test_a_stream_ends_with_its_client(redis_url: str, server_on, path: str) -> None:
    """While a stream is open the server reads Redis for it every 50 ms; once its client has
    gone, the server reads nothing more: the stream's loop ended with the client."""
    server = server_on(redis_url)
    conn = Redis.from_url(redis_url)
    with httpx.Client(base_url=server.base, timeout=DEADLINE_S) as http, http.stream(
            "GET", path, params={"intervalMs": 50}) as answer:
        assert answer.status_code == 200
        chunks = answer.iter_bytes()  # kept: a dropped iterator closes the response
        next(chunks)  # the stream is under way
        before = _commands(conn)
        time.sleep(0.5)
        assert _commands(conn) - before > 2, "the open stream does not read Redis"

    def quiet() -> bool:  # over half a second, only this check's own INFO commands
        first = _commands(conn)
        time.sleep(0.5)
        return _commands(conn) - first <= 1

    wait_for(quiet, "the server to stop reading Redis for a stream whose client left",
             timeout=DEADLINE_S)
    conn.close()
