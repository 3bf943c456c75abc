"""Workers that join a run from elsewhere: a run with no workers of its own (``-c 0``), and a
real second host.

The second host is a Linux network namespace with an address of its own on a veth pair and
a hostname of its own (``unshare --uts``), on this machine: its processes reach Redis and
PostgreSQL only over the veth, as processes on another machine would, and the harness sees
them as another host (their ``host:pid`` names another host, so nothing here can prove them
dead). Addresses come from 198.18.0.0/15, the range set aside for benchmarking (RFC 2544);
the test talks to them and to loopback only. Redis listens on the veth address (protected
mode off, as a password-less server that must accept other hosts); the system PostgreSQL
listens on 127.0.0.1 only, so a ``socat`` on the veth address forwards to it.

Namespaces need root: where the test is not root it skips saying so, unless
HARNESS_REQUIRE_NETNS=1 (set by .ci/run) makes that a failure. The namespace, the veth pair
and every process in the namespace are removed when the test ends, failed or not.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner
from conftest import (
    POSTGRES_URL,
    BackgroundRun,
    assert_complete,
    free_port,
    on_backend,
    start_redis,
    wait_for,
)
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.worker import Worker

from harness import queue as rq_queue
from harness import retries
from harness.cli import main
from harness.config import Settings
from harness.launch import child_env
from harness.lock import LOCK_KEY
from harness.orders import NORMAL, PROCESSED, VIP
from harness.state import ATTEMPTS_KEY, COUNTED_KEY, Phase
from harness.status import get_status
from harness.store import open_store

HOST_B = "harness-host-b"


def _worker_command(concurrency: int) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "worker", "-c", str(concurrency)]


def _host_of(worker: str) -> str:
    return worker.rpartition(":")[0]


# -- a run with no workers of its own (any user, no namespaces) --------------------------------

def test_a_run_with_no_workers_of_its_own_ends_in_one_line_when_none_joins(
    settings: Settings, redis_conn: Redis
) -> None:
    env = {**child_env(settings), "HARNESS_WORKER_WAIT_S": "1.5"}
    t = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-c", "0", "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t
    assert done.returncode == 1, done.stderr
    line = ("no worker joined in 1.5 s: start `harness worker` with the same REDIS_URL and store")
    assert line in done.stdout, done.stdout
    assert redis_conn.get(LOCK_KEY) is None  # the lock is free
    counts = rq_queue.counts(redis_conn)["total"]
    assert counts["waiting"] == counts["active"] == counts["scheduled"] == 0  # nothing queued
    status = get_status(redis_conn)
    assert status["phase"] == Phase.ERROR and line in (status["error"] or "")
    assert status["workers"] == []
    print(f"\n-c 0, no worker: ended after {took:.2f} s (wait 1.5 s): {line}")


def test_workers_that_join_a_run_do_its_work_and_are_listed(
    settings: Settings, redis_conn: Redis
) -> None:
    """`harness run -c 0` here, `harness worker -c 2` beside it: DONE, and the status lists
    the worker processes that did the batches."""
    settings = settings.replace(concurrency=0, quantity=3_000, orders_per_job=100)
    worker = subprocess.Popen(_worker_command(2), env=child_env(settings),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        record = BackgroundRun(settings).join()
        docs = assert_complete(settings, record, redis_conn)
    finally:
        worker.terminate()
        worker.wait(30)
    workers = get_status(redis_conn)["workers"]
    assert {w["host"] for w in workers} == {socket.gethostname()}
    assert 1 <= len(workers) <= 2
    assert sum(w["batches"] for w in workers) >= record.counts.jobs.vip + record.counts.jobs.normal
    assert {d["worker"] for d in docs} == {f"{w['host']}:{w['pid']}" for w in workers}
    shown = CliRunner().invoke(main, ["status", "--redis-url", settings.redis_address])
    assert "workers: " in shown.output and f"{socket.gethostname()}:{workers[0]['pid']}" in shown.output


def test_the_api_starts_a_run_with_no_workers_and_get_pedidos_lists_those_that_join(
    settings: Settings, redis_conn: Redis, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """POST /pedidos/generate?concurrency=0 on PostgreSQL, a `harness worker` beside it: the
    run ends DONE and GET /pedidos lists the worker processes with their batches."""
    import httpx

    settings = on_backend(settings.replace(quantity=3_000), "postgres", request)
    env = child_env(settings)
    port = free_port()
    with open(tmp_path / "serve.log", "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    worker: subprocess.Popen[bytes] | None = None
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def answers() -> bool:
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return http.get("/pedidos").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "harness serve to answer", 60)
        started = http.post("/pedidos/generate", params={"quantity": 3_000, "concurrency": 0})
        assert started.status_code == 202, started.text
        run_id = started.json()["runId"]
        worker = subprocess.Popen(_worker_command(2), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_for(lambda: http.get("/pedidos").json()["phase"] == "DONE", "the run to end", 60)
        doc = http.get("/pedidos").json()
    finally:
        http.close()
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        wait_for(lambda: redis_conn.get(LOCK_KEY) is None, "the run's coordinator to end", 30)
    assert doc["lastRunId"] == run_id and doc["progress"]["processedTotal"] == 3_000
    assert doc["workers"] and {w["host"] for w in doc["workers"]} == {socket.gethostname()}
    assert sum(w["batches"] for w in doc["workers"]) >= 1 and all(w["pid"] for w in doc["workers"])


# -- a real second host ------------------------------------------------------------------------

@dataclass
class SecondHost:
    """A network namespace with its own address and hostname, and the processes started in it."""

    name: str
    veth: str
    address: str  # this host's address on the veth pair
    peer: str  # the second host's
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """``command`` on the second host: in its namespace, with its own hostname."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.name, "unshare", "--uts", "sh", "-c",
                 f'hostname {HOST_B} && exec "$@"', "sh", *command],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process in the namespace (``ip netns pids``)."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self, pids: list[int]) -> None:
        """SIGKILL ``pids``, read beforehand so that they all die at once."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_all(self) -> list[int]:
        """SIGKILL every process in the namespace, as a host that loses power would stop."""
        pids = self.pids()
        self.kill(pids)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        return pids


def _need_root() -> None:
    missing = [tool for tool in ("ip", "unshare", "socat") if shutil.which(tool) is None]
    reason = ("a second host needs root (network namespaces)" if os.geteuid() != 0
              else f"a second host needs {', '.join(missing)}" if missing else None)
    if reason is None:
        return
    if os.environ.get("HARNESS_REQUIRE_NETNS") == "1":
        pytest.fail(f"{reason}; HARNESS_REQUIRE_NETNS=1 makes this a failure")
    pytest.skip(reason)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture
def second_host() -> Iterator[SecondHost]:
    """A second host (see the module's notes); removed, with everything in it, afterwards."""
    _need_root()
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    subnet = next(n for n in random.sample(range(256), 256) if f"198.18.{n}." not in used)
    tag = f"{os.getpid() % 100_000}"
    host = SecondHost(f"harness-b{tag}", f"hb{tag}a", f"198.18.{subnet}.1", f"198.18.{subnet}.2")
    peer = f"hb{tag}b"
    try:
        _run("ip", "netns", "add", host.name)
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", host.name)
        _run("ip", "addr", "add", f"{host.address}/30", "dev", host.veth)
        _run("ip", "link", "set", host.veth, "up")
        _run("ip", "netns", "exec", host.name, "ip", "addr", "add", f"{host.peer}/30", "dev", peer)
        _run("ip", "netns", "exec", host.name, "ip", "link", "set", peer, "up")
        _run("ip", "netns", "exec", host.name, "ip", "link", "set", "lo", "up")
        yield host
    finally:
        host.kill_all()
        subprocess.run(["ip", "link", "del", host.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", host.name], capture_output=True)


@pytest.fixture
def shared(second_host: SecondHost, settings: Settings, request: pytest.FixtureRequest,
           tmp_path: Path) -> Iterator[Settings]:
    """Settings both hosts use: Redis on the veth address, PostgreSQL (a database of the
    test's own) forwarded there; small batches with simulated work, so the run lasts long
    enough to hit."""
    port = free_port()
    redis_proc, _ = start_redis(tmp_path / "redis-shared", port=port, args=[
        "--bind", "127.0.0.1", second_host.address, "--protected-mode", "no"])
    pg = urlsplit(POSTGRES_URL)
    pg_port = free_port()
    forward = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{pg_port},bind={second_host.address},reuseaddr,fork",
         f"TCP:{pg.hostname or '127.0.0.1'}:{pg.port or 5432}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        local = on_backend(settings, "postgres", request)
        db = urlsplit(local.database_url or "")
        user = f"{db.username}@" if db.username else ""
        url = urlunsplit((db.scheme, f"{user}{second_host.address}:{pg_port}", db.path, db.query, ""))
        wait_for(lambda: _answers(second_host.address, pg_port), "the PostgreSQL forward", 10)
        yield local.replace(redis_url=f"redis://{second_host.address}:{port}/0", database_url=url,
                            concurrency=0, quantity=4_000, chunk_size=500, orders_per_job=100,
                            normal_batch_size=500, work_ms=1.0, retry_backoff_s=0.2,
                            worker_wait_s=60)
    finally:
        forward.kill()
        forward.wait(10)
        redis_proc.kill()
        redis_proc.wait(10)


def _answers(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def _stored(settings: Settings) -> list[dict[str, Any]]:
    store = open_store(settings)
    try:
        return store.get_orders(range(settings.quantity))
    finally:
        store.close()


def _counted_once(settings: Settings, conn: Redis) -> None:
    """Redis counted every order once: the per-job counts add up to N, and no job counted
    more orders than it processed itself (each order keeps its job)."""
    counted = {k.decode(): int(v) for k, v in conn.hgetall(COUNTED_KEY).items()}
    assert sum(counted.values()) == settings.quantity
    by_job: dict[str, int] = {}
    for doc in _stored(settings):
        assert doc["status"] == PROCESSED and doc["job"]
        by_job[str(doc["job"])] = by_job.get(str(doc["job"]), 0) + 1
    assert counted == by_job


def test_workers_on_a_second_host_run_it_and_survive_being_killed(
    second_host: SecondHost, shared: Settings, tmp_path: Path
) -> None:
    """The coordinator here with -c 0, `harness worker -c 2` on the second host: DONE, every
    order processed once by the second host, the barrier held by the stored times. Then a
    second run whose second-host workers are all SIGKILLed mid-run, and a fresh
    `harness worker` started there: DONE, nothing lost, nothing counted twice."""
    conn = Redis.from_url(shared.redis_address)
    env = child_env(shared)
    log = tmp_path / "host-b.log"

    # 1. A run done by the second host's workers.
    second_host.start(_worker_command(2), env, log)
    t = time.monotonic()
    first = BackgroundRun(shared).join(120)
    took = time.monotonic() - t
    docs = assert_complete(shared, first, conn)
    hosts = {_host_of(d["worker"]) for d in docs}
    assert hosts == {HOST_B}, hosts
    workers = get_status(conn)["workers"]
    assert {w["host"] for w in workers} == {HOST_B} and len(workers) == 2
    _counted_once(shared, conn)
    vip_end = max(d["processedAt"] for d in docs if d["priority"] == VIP)
    normal_start = min(d["startedAt"] for d in docs if d["priority"] == NORMAL)
    assert normal_start >= vip_end
    print(f"\ntwo hosts: run {first.run_id} DONE in {took:.2f} s "
          f"({(first.total_time_ms or 0) / 1000:.2f} s on its clock), {len(docs):,} orders all "
          f"processed on {HOST_B} by {len(workers)} workers "
          f"({', '.join(str(w['pid']) + ': ' + str(w['batches']) + ' batches' for w in workers)}); "
          f"barrier gap {(normal_start - vip_end) * 1000:.1f} ms")

    # 2. The second host's workers killed mid-batch, a fresh worker started there.
    settings = shared.replace(seed=7)
    second = BackgroundRun(settings)
    store = open_store(settings)
    pids = second_host.pids()
    caught: dict[str, Any] = {}

    def mid_batch() -> bool:
        """Freeze a second-host worker that holds a job and read what of it the store has:
        part of the batch committed, part pending, the whole host is killed there (else the
        worker goes on)."""
        time.sleep(0.01)
        if get_status(conn)["phase"] != Phase.WAITING_NORMAL_DRAIN:
            return False
        for worker in Worker.all(connection=conn):
            job_id, pid = worker.get_current_job_id(), worker.pid
            if worker.hostname != HOST_B or not job_id or pid is None:
                continue
            os.kill(pid, signal.SIGSTOP)
            seqs = Job.fetch(job_id, connection=conn).args[2]
            left = [d["seq"] for d in store.get_orders(seqs) if d["status"] != PROCESSED]
            if 0 < len(left) < len(seqs):
                second_host.kill(pids)
                caught.update(job=job_id, left=left, size=len(seqs),
                              processed=get_status(conn)["progress"]["processedTotal"])
                return True
            os.kill(pid, signal.SIGCONT)
        return False

    try:
        wait_for(mid_batch, "a second-host worker mid-batch in the NORMAL drain", 60)
    finally:
        store.close()
    second_host.kill_all()  # and anything it started meanwhile
    killed_at = time.monotonic()
    second_host.start(_worker_command(2), env, log)
    record = second.join(120)
    recovered = (second.ended_at or 0) - killed_at
    docs = assert_complete(settings, record, conn)
    _counted_once(settings, conn)
    assert {_host_of(d["worker"]) for d in docs} == {HOST_B}
    # The orders the killed batch had not committed were done by a retry of that batch.
    redone = [d for d in docs if d["seq"] in set(caught["left"])]
    assert redone and all(d["job"] == caught["job"] and d["attempts"] > 1 for d in redone), redone
    retried = sum(d["attempts"] > 1 for d in docs)
    print(f"second host's {len(pids)} processes SIGKILLed mid-batch at "
          f"{caught['processed']:,} orders processed; a fresh `harness worker` there finished "
          f"the run: DONE {recovered:.2f} s after the kill, {retried} orders done by a retry "
          f"({len(redone)} of them the killed batch's, which had committed "
          f"{caught['size'] - len(redone)} of {caught['size']}), every order processed and counted once")


def _writing(settings: Settings) -> bool:
    """Whether any connection to the run's database is inside a transaction: the store's
    connections are in autocommit except while they write, so one is mid-write. A frozen
    worker's would stay so; when this says yes (the frozen worker's, or another's for a
    moment), the freeze is undone and tried again on a later look."""
    import psycopg

    database = urlsplit(settings.database_url or "").path.lstrip("/")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
                            (database,)).fetchone()
    return bool(row and row[0])


def test_a_batch_run_twice_on_two_hosts_is_counted_once(
    second_host: SecondHost, shared: Settings, tmp_path: Path
) -> None:
    """Try 1 of a batch J on the second host is frozen mid-batch (SIGSTOP: from here it looks
    alive, and it holds orders it has not committed). RQ gives up on it, as its timeout
    would, and schedules a retry; that retry vanishes between RQ's lists (as when its worker
    dies right after taking it), so the coordinator enqueues J's pending orders again as
    another job, J2, which a worker here runs. Then J's retry turns up after all and runs here,
    and try 1 is woken beside it. Every order moved once; each is counted once, by the job
    that moved it. (Counting what the store held processed for the batch, the retry counted
    J2's orders a second time.)"""
    conn = Redis.from_url(shared.redis_address)
    settings = shared.replace(orders_per_job=200, work_ms=2.0, retry_backoff_s=0.1)
    env = child_env(settings)
    second_host.start(_worker_command(1), env, tmp_path / "host-b.log")
    running = BackgroundRun(settings)
    frozen: dict[str, Any] = {}
    store = open_store(settings)

    def busy_on_b() -> bool:
        time.sleep(0.02)
        for worker in Worker.all(connection=conn):
            job_id = worker.get_current_job_id()
            if worker.hostname == HOST_B and job_id:
                job = Job.fetch(job_id, connection=conn)
                done = sum(d["status"] == PROCESSED for d in store.get_orders(job.args[2]))
                if 20 <= done <= len(job.args[2]) - 60:  # mid-batch, much left
                    os.kill(worker.pid, signal.SIGSTOP)
                    if _writing(settings):  # frozen inside a write: its row locks would stay
                        os.kill(worker.pid, signal.SIGCONT)  # held, and J2 wait on them
                        return False
                    frozen.update(worker=worker, job=job, seqs=job.args[2])
                    return True
        return False

    here: subprocess.Popen[bytes] | None = None
    try:
        wait_for(busy_on_b, "a second-host worker mid-batch", 60)
        worker, job = frozen["worker"], frozen["job"]
        queue = Queue(job.origin, connection=conn)
        # What RQ does once the job's timeout has passed: the try counts as abandoned and
        # the batch is scheduled for a retry, which the coordinator moves to its queue.
        registry = StartedJobRegistry(job.origin, connection=conn)
        entries = [e for e in conn.zrange(registry.key, 0, -1) if e.decode().startswith(job.id)]
        conn.zadd(registry.key, dict.fromkeys(entries, 0), xx=True)
        registry.cleanup()
        wait_for(lambda: job.id in queue.get_job_ids(), "the retry to be queued", 30)
        conn.lrem(queue.key, 0, job.id)  # ... and vanishes
        here = subprocess.Popen(_worker_command(1), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        record = running.join(120)  # J's pending orders were enqueued again (J2) and done
        assert record.phase == "DONE", record.error
        first_try = {d["seq"] for d in store.get_orders(frozen["seqs"]) if d["job"] == job.id}
        queue.push_job_id(job.id)  # J's retry turns up after all, and runs here ...
        wait_for(lambda: int(conn.hget(ATTEMPTS_KEY, job.id) or 0) >= 2, "the retry to start", 30)
        os.kill(worker.pid, signal.SIGCONT)  # ... and its first try goes on beside it
        wait_for(lambda: Job.fetch(job.id, connection=conn).get_status() == "finished"
                 and Worker.find_by_key(worker.key, connection=conn).get_current_job_id() is None,
                 "both tries to end", 30)
    finally:
        store.close()
        with contextlib.suppress(ProcessLookupError, KeyError):
            os.kill(frozen["worker"].pid, signal.SIGCONT)
        if here is not None:
            here.terminate()
            here.wait(30)
    docs = assert_complete(settings, record, conn)  # the counts too, after both tries ended
    _counted_once(settings, conn)
    batch = [d for d in docs if d["seq"] in set(frozen["seqs"])]
    jobs = {d["job"] for d in batch}
    assert len(jobs) >= 2 and job.id in jobs  # J's first try, then J2 (and no J retry: done)
    assert int(conn.hget(COUNTED_KEY, job.id) or 0) == len(first_try) < len(batch)
    assert {_host_of(d["worker"]) for d in batch} == {HOST_B, socket.gethostname()}
    assert retries.dead_letter_count(conn) == 0
    print(f"\nbatch run twice on two hosts: {len(batch)} orders; try 1 on {HOST_B} frozen "
          f"after {len(first_try)}, its retry vanished, the rest enqueued again and done here; "
          f"then the retry and the woken try 1 ran too: J counted {len(first_try)}, the "
          f"others {len(batch) - len(first_try)}, {settings.quantity:,} in all, once each")
