"""The HTTP API through a real `harness serve` process and real clients (httpx, and curl as a
user of the original service would type it), on the test's own Redis and data folder.

Runs started through the API are detached processes of their own: every test ends by
stopping its server and killing the process group of anything still running with its data
folder, then asserts that nothing is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from harness import logs
from harness.config import ENV_VARS, Settings
from harness.orders import PROCESSED
from harness.store import open_store

TERMINAL = {"DONE", "ERROR", "ABORTED"}
PHASES = ["GENERATING", "WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN", "DONE"]
# Runs that last: 1 ms of simulated work per order, so 4,000 orders keep 2 workers about 2 s.
SLOW = {"quantity": 4_000, "workMs": 1, "ordersPerJob": 100, "chunkSize": 500}
# A long generation: 20,000 orders in 400 chunks.
LONG_GENERATION = {"quantity": 20_000, "chunkSize": 50, "ordersPerJob": 200}
TOKEN = "t0ken-s3cret-for-tests"


def processes_using(data_dir: Path) -> list[int]:
    """Processes (not zombies) whose environment names this data folder: the server, the runs
    it started, their worker pools."""
    needle = f"HARNESS_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Api:
    """One `harness serve` process and an httpx client for it."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.env, self.log_path = env, log
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base, timeout=60)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Api:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.cli", "serve", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, "harness serve to answer", timeout=60)
        return self

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()
        try:
            return self.http.get("/pedidos").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        return self.process.wait(30)

    def status(self) -> dict[str, Any]:
        answer = self.http.get("/pedidos")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def generate(self, **params: Any) -> httpx.Response:
        return self.http.post("/pedidos/generate", params=params)

    def wait_phase(self, phases: set[str], run_id: str | None = None, timeout: float = 120) -> dict[str, Any]:
        docs: list[dict[str, Any]] = []

        def reached() -> bool:
            docs.append(self.status())
            return docs[-1]["phase"] in phases and run_id in (None, docs[-1]["lastRunId"])

        wait_for(reached, f"phase {phases}", timeout)
        return docs[-1]

    def wait_idle(self, timeout: float = 60) -> None:
        """The last run ended and its coordinator let the lock go."""
        wait_for(lambda: self.http.get("/pedidos/health/queue").json()["coordinator"] is None,
                 "the run lock to be free", timeout)


@pytest.fixture
def api_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """This process's environment without any harness setting, plus the test's Redis, data
    folder and file logging."""
    settings_vars = {var for var, _ in ENV_VARS.values()}
    base = {k: v for k, v in os.environ.items() if k not in settings_vars and k != "HARNESS_RUN_ID"}
    return {**base, "REDIS_URL": redis_url, "HARNESS_DATA_DIR": str(tmp_path / "data"),
            "BACKEND_LOGS": "true", "HARNESS_CANCEL_TIMEOUT_S": "20"}


@pytest.fixture
def servers(api_env: dict[str, str], tmp_path: Path) -> Iterator[list[Api]]:
    """Servers a test starts (see ``serve``); all stopped after it, with every run they left,
    and nothing may remain."""
    started: list[Api] = []
    yield started
    for api in started:
        api.stop(signal.SIGKILL if api.process and api.process.poll() is None else signal.SIGTERM)
        api.http.close()
    data_dir = Path(api_env["HARNESS_DATA_DIR"])
    leftover = processes_using(data_dir)
    for pgid in {os.getpgid(pid) for pid in leftover if _exists(pid)} - {os.getpgrp()}:
        os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not processes_using(data_dir), "every process of the test to end", timeout=30)


def _exists(pid: int) -> bool:
    try:
        os.getpgid(pid)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def serve(servers: list[Api], api_env: dict[str, str], tmp_path: Path):
    def start(port: int | None = None, **extra_env: str) -> Api:
        api = Api({**api_env, **extra_env}, tmp_path / f"serve-{len(servers)}.log", port)
        servers.append(api)
        return api.start()

    return start


@pytest.fixture
def api(serve) -> Api:
    return serve()


def _store_processed(env: dict[str, str]) -> int:
    store = open_store(Settings.from_env(environ=env))
    try:
        return store.count_orders(status=PROCESSED)
    finally:
        store.close()


def _metrics(api: Api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    answer = api.http.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


# -- a run through the API, start to end -----------------------------------------------------

def test_a_run_through_the_api_status_conflict_metrics_logs_history(
    api: Api, api_env: dict[str, str]
) -> None:
    answer = api.generate(**SLOW)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["runId"]
    assert answer.json()["quantity"] == SLOW["quantity"]

    second = api.generate(quantity=100)
    assert second.status_code == 409 and run_id in second.json()["error"]

    doc = api.status()  # the live state is this run's as soon as generate answers
    assert doc["lastRunId"] == run_id and doc["isProcessing"]
    for key in ("generationTimeMs", "enqueueVipTimeMs", "enqueueNormalTimeMs", "totalTimeMs",
                "counts", "phase", "lastRunId"):
        assert key in doc, key
    for p in ("vip", "normal"):
        assert set(doc["processing"][p]) >= {"start", "end", "timeMs", "count"}
    assert set(doc["throughput"]) >= {"vip", "normal", "overall"}
    assert set(doc["eta"]) >= {"estimatedMs", "progressPercent"}
    assert doc["progress"]["target"] == SLOW["quantity"]
    assert set(doc["progress"]) >= {"target", "generated", "processedTotal"}

    # While it runs, what would take its work away is refused.
    for path, params in (("/pedidos/queue/clean", {"state": "wait"}), ("/pedidos/queue/close", {}),
                         ("/pedidos/reset", {})):
        refused = api.http.post(path, params=params)
        assert refused.status_code == 409 and run_id in refused.json()["error"], (path, refused.text)
    metrics = _metrics(api)
    assert metrics["harness_run_active"][()] == 1
    assert metrics["harness_run_info"][(("run_id", run_id),)] == 1

    done = api.wait_phase({"DONE"}, run_id)
    assert done["progress"]["processedTotal"] == SLOW["quantity"] and done["eta"]["progressPercent"] == 100

    metrics = _metrics(api)
    processed = metrics["harness_orders_processed_total"]
    assert sum(processed.values()) == _store_processed(api_env) == SLOW["quantity"]
    assert processed[(("priority", "VIP"),)] == done["counts"]["vip"]
    assert metrics["harness_run_phase"][(("phase", "DONE"),)] == 1
    assert metrics["harness_run_phase"][(("phase", "GENERATING"),)] == 0
    assert metrics["harness_run_duration_seconds"][()] == pytest.approx(done["totalTimeMs"] / 1000, abs=5e-4)
    assert metrics["harness_dead_letter_jobs"][()] == 0
    assert (("queue", "orders-vip"), ("state", "completed")) in metrics["harness_queue_jobs"]

    lines = api.http.get("/pedidos/logs", params={"lines": 50}).json()["lines"]
    assert any(f"run={run_id}" in line and "phase=DONE" in line for line in lines)
    assert len(api.http.get("/pedidos/logs", params={"lines": 2}).json()["lines"]) == 2

    api.wait_idle()
    runs = api.http.get("/pedidos/runs", params={"limit": 5}).json()
    assert [r["runId"] for r in runs] == [run_id] and runs[0]["phase"] == "DONE"
    record = api.http.get(f"/pedidos/runs/{run_id}").json()
    assert record["counts"]["processed"] == SLOW["quantity"] and record["barrier"]["held"]
    missing = api.http.get("/pedidos/runs/20200101T000000-000000")
    assert missing.status_code == 404 and "20200101T000000-000000" in missing.json()["error"]
    # The child's output, kept beside the data: its record as JSON.
    output = Path(api_env["HARNESS_DATA_DIR"]) / "runs" / f"{run_id}.log"
    assert json.loads(output.read_text())["runId"] == run_id

    # The lock is free again: reset (history kept) and a new run are accepted.
    reset = api.http.post("/pedidos/reset")
    assert reset.status_code == 200 and reset.json()["orders"] == SLOW["quantity"]
    assert api.status()["phase"] == "IDLE"
    assert len(api.http.get("/pedidos/runs").json()) == 1


def test_two_generates_at_once_start_one_run_and_refuse_the_other(api: Api) -> None:
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def post() -> None:
        with httpx.Client(base_url=api.base, timeout=60) as http:
            barrier.wait()
            answers.append(http.post("/pedidos/generate", params=SLOW))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 202).json()["runId"]
    loser = next(a for a in answers if a.status_code == 409).json()["error"]
    assert winner in loser
    assert api.wait_phase({"DONE"}, winner)["progress"]["processedTotal"] == SLOW["quantity"]


@pytest.mark.parametrize(("phase", "params"), [
    ("GENERATING", LONG_GENERATION),
    ("WAITING_NORMAL_DRAIN", SLOW),
])
def test_cancel_through_the_api_in_a_phase(
    api: Api, api_env: dict[str, str], phase: str, params: dict[str, Any]
) -> None:
    run_id = api.generate(**params).json()["runId"]
    api.wait_phase({phase}, run_id, timeout=60)
    answer = api.http.post("/pedidos/cancel")  # the original's defaults: purge, remove pending
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["cancelled"] and result["runId"] == run_id
    record = result["record"]
    assert record["phase"] == "ABORTED" and record["cancel"]["phase"] == phase
    assert record["cancel"]["purge"] and record["cancel"]["removePending"]
    doc = api.status()
    assert doc["phase"] == "ABORTED" and doc["lastRunId"] == run_id
    assert doc["progress"]["processedTotal"] == _store_processed(api_env)
    health = api.http.get("/pedidos/health/queue").json()
    assert health["status"] == "aborted" and health["aborted"] and not health["isProcessing"]
    # Nothing active: a second cancel changes nothing.
    again = api.http.post("/pedidos/cancel").json()
    assert not again["cancelled"] and "no run is active" in again["message"]


def test_cancel_reset_logs_empties_the_log_file(api: Api, api_env: dict[str, str]) -> None:
    run_id = api.generate(**SLOW).json()["runId"]
    api.wait_phase({"WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN"}, run_id)
    result = api.http.post("/pedidos/cancel", params={"purge": "true", "removePending": "false",
                                                      "resetLogs": "true"}).json()
    assert result["cancelled"] and not result["record"]["cancel"]["removePending"]
    log_file = Path(api_env["HARNESS_DATA_DIR"]) / "harness.log"
    assert f"run={run_id}" not in log_file.read_text()  # emptied after the run stopped
    assert api.http.get("/pedidos/logs").json()["lines"] == []


# -- queue routes, health, reset on an idle harness --------------------------------------------

def test_queue_routes_health_and_reset(api: Api) -> None:
    http = api.http
    assert http.post("/pedidos/queue/pause").json() == {"paused": True}
    health = http.get("/pedidos/health/queue").json()
    assert health["status"] == "paused" and health["paused"]
    assert set(health["queue"]) >= {"waiting", "active", "completed", "failed", "delayed"}
    for key in ("phase", "isProcessing", "aborting", "hasFailedJobs", "isStuck", "aborted"):
        assert key in health
    status = http.get("/pedidos/queue/status").json()
    assert status["paused"] and status["counts"]["total"]["waiting"] == 0
    assert http.post("/pedidos/queue/resume").json() == {"paused": False}
    assert http.get("/pedidos/health/queue").json()["status"] == "healthy"

    # A small run leaves completed jobs: listed, cleaned; BullMQ names are understood.
    run_id = api.generate(quantity=1_000, ordersPerJob=100, concurrency=1).json()["runId"]
    api.wait_phase({"DONE"}, run_id)
    api.wait_idle()
    jobs = http.get("/pedidos/queue/jobs", params={"types": "completed", "limit": 3}).json()
    assert jobs and all(j["state"] == "completed" for j in jobs) and len(jobs) <= 6
    assert http.get("/pedidos/queue/jobs", params={"types": "wait,delayed"}).json() == []
    cleaned = http.post("/pedidos/queue/clean", params={"state": "completed"}).json()
    assert cleaned["removed"] > 0
    assert http.get("/pedidos/queue/status").json()["counts"]["total"]["completed"] == 0
    assert http.post("/pedidos/queue/clean", params={"state": "wait"}).json()["removed"] == 0
    assert http.post("/pedidos/queue/clean", params={"state": "delayed"}).status_code == 200
    refused = http.post("/pedidos/queue/clean", params={"state": "active"})
    assert refused.status_code == 400 and "running jobs cannot be removed" in refused.json()["error"]
    closed = http.post("/pedidos/queue/close", params={"timeoutS": 5})
    assert closed.status_code == 200 and closed.json()["left"] == 0

    reset = http.post("/pedidos/reset").json()
    assert reset["orders"] == 1_000 and reset["runs"] == 0
    assert api.status()["phase"] == "IDLE"
    assert [r["runId"] for r in http.get("/pedidos/runs").json()] == [run_id]  # history kept


def test_openapi_docs_list_every_route(api: Api) -> None:
    assert api.http.get("/docs").status_code == 200
    paths = set(api.http.get("/openapi.json").json()["paths"])
    assert paths >= {"/pedidos", "/pedidos/generate", "/pedidos/logs", "/pedidos/health/queue",
                     "/pedidos/cancel", "/pedidos/reset", "/pedidos/queue/pause",
                     "/pedidos/queue/resume", "/pedidos/queue/clean", "/pedidos/queue/status",
                     "/pedidos/queue/jobs", "/pedidos/queue/close", "/metrics", "/pedidos/stream",
                     "/pedidos/logs/stream", "/pedidos/runs", "/pedidos/runs/{runId}"}


def test_the_dashboard_and_the_docs_are_served_from_the_package(serve) -> None:
    api = serve(HARNESS_API_TOKEN=TOKEN)
    page = api.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<meta name="harness-token-required" content="true">' in page.text and TOKEN not in page.text
    sources = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources  # no CDN
    for path in [s for s in sources if s.startswith("/static/")]:
        assert api.http.get(path).status_code == 200, path
    assert api.http.get("/static/vendor/uPlot.LICENSE").text.startswith("The MIT License")
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = api.http.get(path).text
        assert f"/docs-assets/{asset}" in html and "cdn." not in html and "fonts.googleapis" not in html
        assert api.http.get(f"/docs-assets/{asset}").status_code == 200
    assert "/docs" not in api.http.get("/openapi.json").json()["paths"]


def test_status_reads_share_one_snapshot_with_an_etag(api: Api, api_env: dict[str, str]) -> None:
    """However many clients ask at once, the server reads Redis once per 50 ms; a client
    holding the document's ETag gets a 304."""
    conn = Redis.from_url(api_env["REDIS_URL"])

    def hgetalls() -> int:
        return int(conn.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))

    first = api.http.get("/pedidos")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache" and first.json()["phase"] == "IDLE"
    unchanged = api.http.get("/pedidos", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.base, timeout=30) as http:
            return await asyncio.gather(*(http.get("/pedidos") for _ in range(200)))

    before, t0 = hgetalls(), time.monotonic()
    answers = asyncio.run(burst())
    took, reads = time.monotonic() - t0, hgetalls() - before
    assert all(a.status_code == 200 and a.headers["etag"] == etag for a in answers)
    assert reads <= took / 0.05 + 2, (reads, took)  # one read per 50 ms at most, not 200
    conn.close()


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "params", "named"), [
    ("POST", "/pedidos/generate", {"quantity": "-1"}, "quantity='-1': quantity must be >= 1"),
    ("POST", "/pedidos/generate", {"quantity": "0"}, "quantity='0'"),
    ("POST", "/pedidos/generate", {"quantity": "1.5"}, "quantity='1.5'"),
    ("POST", "/pedidos/generate", {"quantity": "abc"}, "quantity='abc'"),
    ("POST", "/pedidos/generate", {"quantity": "1500001"},
     "quantity='1500001': quantity 1,500,001 is above MAX_ORDERS"),
    ("POST", "/pedidos/generate", {"chunkSize": "0"}, "chunkSize='0': chunk_size must be >= 1"),
    ("POST", "/pedidos/generate", {"ordersPerJob": "-3"}, "ordersPerJob='-3'"),
    ("POST", "/pedidos/generate", {"concurrency": "999"}, "concurrency='999': concurrency must be <= 256"),
    ("POST", "/pedidos/generate", {"seed": "-4"}, "seed='-4'"),
    ("POST", "/pedidos/generate", {"tierMix": "OURO=x"}, "tierMix='OURO=x'"),
    ("POST", "/pedidos/generate", {"workMs": "fast"}, "workMs='fast'"),
    ("POST", "/pedidos/generate", {"workMs": "-1"}, "workMs='-1'"),
    ("POST", "/pedidos/generate", {"normalBatchSize": "0"}, "normalBatchSize='0'"),
    ("GET", "/pedidos/logs", {"lines": "abc"}, "lines='abc'"),
    ("GET", "/pedidos/logs", {"lines": "0"}, "lines='0'"),
    ("POST", "/pedidos/cancel", {"purge": "maybe"}, "purge='maybe'"),
    ("POST", "/pedidos/cancel", {"removePending": "2"}, "removePending='2'"),
    ("POST", "/pedidos/cancel", {"resetLogs": "x"}, "resetLogs='x'"),
    ("POST", "/pedidos/reset", {"force": "perhaps"}, "force='perhaps'"),
    ("POST", "/pedidos/queue/clean", {"state": "nope"}, "state='nope': unknown job state 'nope'"),
    ("POST", "/pedidos/queue/clean", {}, "state is required"),
    ("POST", "/pedidos/queue/clean", {"state": "wait", "force": "x"}, "force='x'"),
    ("GET", "/pedidos/queue/jobs", {"types": "waiting,bogus"},
     "types='waiting,bogus': unknown job state 'bogus'"),
    ("GET", "/pedidos/queue/jobs", {"limit": "0"}, "limit='0'"),
    ("POST", "/pedidos/queue/close", {"timeoutS": "-1"}, "timeoutS='-1'"),
    ("GET", "/pedidos/runs", {"limit": "0"}, "limit='0'"),
    ("GET", "/pedidos/runs", {"limit": "ten"}, "limit='ten'"),
    ("GET", "/pedidos/stream", {"intervalMs": "5"}, "intervalMs='5'"),
    ("GET", "/pedidos/stream", {"intervalMs": "soon"}, "intervalMs='soon'"),
    ("GET", "/pedidos/logs/stream", {"intervalMs": "0"}, "intervalMs='0'"),
    ("GET", "/pedidos/logs/stream", {"lines": "-1"}, "lines='-1'"),
])
def test_a_bad_query_value_is_a_400_naming_it_and_changes_nothing(
    api: Api, api_env: dict[str, str], method: str, path: str, params: dict[str, str], named: str
) -> None:
    answer = api.http.request(method, path, params=params)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert set(body) == {"error"} and named in body["error"] and "Traceback" not in body["error"]
    assert api.status()["phase"] == "IDLE"
    assert not (Path(api_env["HARNESS_DATA_DIR"]) / "runs").exists()  # no run was started


def test_errors_are_json_with_the_status_of_their_branch(serve) -> None:
    api = serve(BACKEND_LOGS="false")
    unknown = api.http.get("/pedidos/nothing-here")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no route GET /pedidos/nothing-here"}
    wrong_method = api.http.get("/pedidos/cancel")
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}


def test_redis_gone_is_a_503_with_a_redacted_message(serve, redis_factory, tmp_path: Path) -> None:
    password = "g0ne-pa55word"
    redis_url = redis_factory(tmp_path / "redis-gone", password=password)
    api = serve(REDIS_URL=redis_url)
    assert api.status()["phase"] == "IDLE"
    with contextlib.suppress(Exception):  # the server closes the connection as it goes
        Redis.from_url(redis_url).shutdown(nosave=True)
    time.sleep(0.1)  # the status snapshot the server shares is at most 50 ms old
    for path in ("/pedidos", "/pedidos/health/queue", "/metrics", "/pedidos/queue/status"):
        answer = api.http.get(path)
        assert answer.status_code == 503, (path, answer.text)
        assert "does not answer" in answer.json()["error"] and password not in answer.text
    assert api.http.post("/pedidos/generate", params={"quantity": 10}).status_code == 503


# -- token and secrets ---------------------------------------------------------------------------

def test_with_a_token_every_post_needs_it_gets_stay_open_and_secrets_never_show(
    serve, redis_factory, tmp_path: Path
) -> None:
    password = "r3dis-pa55word"
    redis_url = redis_factory(tmp_path / "redis-pw", password=password)
    api = serve(HARNESS_API_TOKEN=TOKEN, REDIS_URL=redis_url)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for path in ("/pedidos/queue/pause", "/pedidos/generate", "/pedidos/reset", "/pedidos/cancel"):
            refused = api.http.post(path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "needs the API token" in refused.json()["error"] and TOKEN not in refused.text
    assert api.http.get("/pedidos/health/queue").json()["paused"] is False  # nothing was paused

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert api.http.post("/pedidos/queue/pause", headers=auth).status_code == 200
    assert api.http.post("/pedidos/queue/resume", headers=auth).status_code == 200
    started = api.http.post("/pedidos/generate", params={"quantity": 500}, headers=auth)
    assert started.status_code == 202
    run_id = started.json()["runId"]
    api.wait_phase({"DONE"}, run_id)
    api.wait_idle()

    texts = [api.http.get(path).text for path in (
        "/pedidos", "/pedidos/health/queue", "/pedidos/queue/status", "/pedidos/runs",
        f"/pedidos/runs/{run_id}", "/metrics", "/openapi.json", "/pedidos/logs?lines=1000")]
    texts.append(api.http.post("/pedidos/cancel", headers=auth).text)
    record = api.http.get(f"/pedidos/runs/{run_id}").json()
    assert record["parameters"]["api_token"] is None  # the run's process never had it
    assert "redis://:***@127.0.0.1" in record["parameters"]["redis_url"]
    api.stop()
    texts += [p.read_text() for p in tmp_path.rglob("*.log")]  # server, run and harness logs
    for text in texts:
        assert TOKEN not in text and password not in text


# -- streams ----------------------------------------------------------------------------------

def _events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event or "message", json.loads(line.removeprefix("data: "))


def test_the_status_stream_sends_phase_changes_in_order_ending_with_done(api: Api) -> None:
    phases: list[str] = []
    first = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=api.base, timeout=60) as http, \
                http.stream("GET", "/pedidos/stream", params={"intervalMs": 50}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event, doc in _events(response):
                assert event == "status"
                first.set()
                if doc["lastRunId"] is None:
                    continue
                if not phases or phases[-1] != doc["phase"]:
                    phases.append(doc["phase"])
                if doc["phase"] in TERMINAL:
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert first.wait(30), "the stream sent nothing"
    assert api.generate(**SLOW).status_code == 202
    listener.join(120)
    assert not listener.is_alive(), f"no DONE in the stream: {phases}"
    assert phases[-1] == "DONE" and phases[0] == "GENERATING"
    assert phases == sorted(phases, key=PHASES.index), phases  # in order, none repeated


def test_the_log_stream_sends_new_lines_with_file_logging_off(serve, api_env: dict[str, str]) -> None:
    """The lines come from Redis: no BACKEND_LOGS, no log file, and still every line."""
    api = serve(BACKEND_LOGS="false")
    Redis.from_url(api_env["REDIS_URL"]).eval(logs.APPEND, 2, logs.LOG_KEY, logs.LOG_COUNT_KEY,
                                              logs.KEEP_LINES, "an old line")
    received: list[str] = []
    run_ids: list[str] = []

    def listen() -> None:
        with httpx.Client(base_url=api.base, timeout=60) as http, http.stream(
                "GET", "/pedidos/logs/stream", params={"lines": 1, "intervalMs": 50}) as response:
            for event, doc in _events(response):
                assert event == "log"
                received.extend(doc["lines"])
                if run_ids and any(f"run={run_ids[0]}" in x and "phase=DONE" in x for x in received):
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    wait_for(lambda: received == ["an old line"], "the history line")
    run_ids.append(api.generate(quantity=2_000).json()["runId"])
    listener.join(120)
    assert not listener.is_alive(), received
    assert received[0] == "an old line"
    assert any(f"run={run_ids[0]}" in line and "phase=GENERATING" in line for line in received)
    assert not (Path(api_env["HARNESS_DATA_DIR"]) / "harness.log").exists()
    # The same lines through GET /pedidos/logs (the original's curl example), each naming
    # the host and process that wrote it.
    lines = api.http.get("/pedidos/logs", params={"lines": 300}).json()["lines"]
    assert lines[:len(received)] == received
    assert all(re.search(r" harness(\.\w+)*\[[^\]:]+:\d+\] ", line) for line in lines[1:]), lines


# -- the server holds no run ---------------------------------------------------------------

def test_sigterm_stops_the_server_not_the_run_and_a_new_server_reports_it(serve) -> None:
    first = serve()
    run_id = first.generate(quantity=12_000, workMs=0.5, ordersPerJob=200).json()["runId"]
    first.wait_phase({"WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN"}, run_id)
    coordinator = first.http.get("/pedidos/health/queue").json()["coordinator"]
    assert coordinator and coordinator.startswith(run_id)

    # A stream open meanwhile does not hold the server up.
    with httpx.Client(base_url=first.base, timeout=60) as http, http.stream(
            "GET", "/pedidos/stream") as response:
        next(_events(response))
        t0 = time.monotonic()
        # uvicorn shuts down, then re-raises the signal it caught: the exit is "by SIGTERM".
        assert first.stop(signal.SIGTERM) == -signal.SIGTERM
    assert time.monotonic() - t0 < 15
    log = first.log_path.read_text()
    assert "Finished server process" in log and "Traceback" not in log, log

    second = serve(port=first.port)  # the run holds no copy of the server's socket
    doc = second.status()
    assert doc["lastRunId"] == run_id and doc["isProcessing"], doc
    assert second.http.get("/pedidos/health/queue").json()["coordinator"] == coordinator
    done = second.wait_phase({"DONE"}, run_id)
    assert done["progress"]["processedTotal"] == 12_000


# -- curl, as the original's users typed it ----------------------------------------------------

def test_the_originals_curl_commands(api: Api) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (apt-get install curl)")

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run([curl, "-sS", "--fail-with-body", *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    base = api.base
    started = run("-X", "POST",
                  f"{base}/pedidos/generate?quantity={SLOW['quantity']}&workMs=1&ordersPerJob=100")
    run_id = started["runId"]
    status = run(f"{base}/pedidos")
    assert status["lastRunId"] == run_id and status["progress"]["target"] == SLOW["quantity"]
    health = run(f"{base}/pedidos/health/queue")
    assert health["isProcessing"] and health["status"] == "healthy"
    cancelled = run("-X", "POST", f"{base}/pedidos/cancel?purge=true&removePending=true&resetLogs=false")
    assert cancelled["cancelled"] and cancelled["record"]["phase"] == "ABORTED"
    assert run(f"{base}/pedidos/health/queue")["status"] == "aborted"
    assert run(f"{base}/pedidos")["phase"] == "ABORTED"


# -- the command ----------------------------------------------------------------------------------

def test_serve_without_the_api_extra_names_it(api_env: dict[str, str]) -> None:
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from harness.cli import main; main(['serve'])")
    done = subprocess.run([sys.executable, "-c", code], env=api_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "[api] extra" in lines[0] and "pip install 'harness[api]'" in lines[0]


@pytest.mark.parametrize(("args", "extra_env", "code", "message"), [
    (["--port", "0"], {}, 2, "--port 0: port must be >= 1"),
    ([], {"PORT": "http"}, 2, "PORT='http': port must be an integer, got 'http'"),
])
def test_serve_refuses_a_bad_port(
    api_env: dict[str, str], args: list[str], extra_env: dict[str, str], code: int, message: str
) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "serve", *args],
                          env={**api_env, **extra_env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == code and message in done.stderr


def test_serve_with_no_redis_says_so_at_once(api_env: dict[str, str], unused_port: int) -> None:
    url = f"redis://:hunter2@127.0.0.1:{unused_port}/0"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "serve", "--port", str(free_port())],
                          env={**api_env, "REDIS_URL": url}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "does not answer" in done.stderr and "hunter2" not in done.stderr
