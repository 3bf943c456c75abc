"""The dashboard at `/` and the docs, in a real browser (headless Chromium driven by
Playwright, as the JupyterLab test), against a real `harness serve`, runs and workers.

Every page is opened offline: any request that leaves the server is refused and fails the
test, and so does any console error or uncaught exception in the page, except the browser's
own "Failed to load resource" lines a test provokes on purpose (a 400, a 401, the server
stopped). Screenshots land in test-artifacts/. Without chromium the tests are skipped,
except in CI (HARNESS_REQUIRE_BROWSER=1), where they fail.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The API tests' fixtures (a `harness serve` per test, its runs killed after it); the tests
# take them as parameters, which ruff would call redefinitions.
# ruff: noqa: F811
from conftest import chromium_path
from test_api import TOKEN, Api, api, api_env, serve, servers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ACTIVE = {"GENERATING", "WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN"}
# Records the phase badge's every value, from before the page's own script runs.
WATCH_PHASES = """
window.__phases = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("phase");
  if (!el) return;  // not the dashboard
  const note = () => {
    const t = el.textContent;
    if (window.__phases[window.__phases.length - 1] !== t) window.__phases.push(t);
  };
  new MutationObserver(note).observe(el, {childList: true, characterData: true, subtree: true});
});
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A tab on one server, offline: what it logged and what it tried to fetch elsewhere."""

    def __init__(self, browser: Any, api: Api, allowed: tuple[str, ...] = ()) -> None:
        self.api, self.allowed = api, allowed
        self.console: list[str] = []
        self.outside: list[str] = []
        self.requests: list[Any] = []
        self.page = browser.new_page(viewport={"width": 1300, "height": 1000})
        self.page.set_default_timeout(60_000)
        host = f"http://127.0.0.1:{api.port}/"
        self.page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(host)
                        else (self.outside.append(route.request.url), route.abort()))
        self.page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.add_init_script(WATCH_PHASES)

    def open(self, path: str = "/") -> Page:
        self.page.goto(self.api.base + path)
        return self

    def live(self) -> None:
        self.page.locator("#conn.live").wait_for()

    def phase(self) -> str:
        return str(self.page.inner_text("#phase"))

    def wait_phase(self, *phases: str, timeout: float = 120) -> None:
        wanted = ",".join(f"'{p}'" for p in phases)
        self.page.wait_for_function(
            f"[{wanted}].includes(document.getElementById('phase').textContent)", timeout=timeout * 1000)

    def seen(self) -> list[str]:
        return list(self.page.evaluate("window.__phases"))

    def fill(self, **fields: Any) -> None:
        for name, value in fields.items():
            self.page.fill(f"#start-form input[name={name}]", str(value))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def check_clean(self) -> None:
        """No console error the test did not provoke, nothing fetched from elsewhere."""
        assert not self.outside, self.outside
        unexpected = [m for m in self.console if not any(a in m for a in self.allowed)]
        assert not unexpected, unexpected


def _run_id(message: str) -> str:
    found = re.search(r"run (\S+) started", message)
    assert found, message
    return found.group(1)


def test_a_run_started_from_the_form_is_followed_live_to_done(browser: Any, serve: Any,
                                                              api_env: dict[str, str]) -> None:
    api = serve(BACKEND_LOGS="false")  # the log tail needs no log file
    tab = Page(browser, api, allowed=("status of 400",)).open()
    page = tab.page
    tab.live()
    assert page.locator("a[href='/docs']").count() == 1 and page.locator("a[href='/redoc']").count() == 1
    assert page.locator("#token-box").is_hidden()  # no token on this server

    tab.fill(quantity="-1")  # the API validates; the page shows its words
    page.click("#start")
    page.locator("#message.error", has_text="quantity='-1'").wait_for()

    tab.fill(quantity=8_000, workMs=0.5, ordersPerJob=200, chunkSize=1_000)
    page.click("#start")
    page.locator("#message.ok", has_text="started").wait_for()
    run_id = _run_id(page.inner_text("#message"))
    page.locator("#run-id", has_text=run_id).wait_for()
    tab.wait_phase("WAITING_NORMAL_DRAIN", "DONE")
    tab.shot("dashboard-running.png")
    tab.wait_phase("DONE")
    page.locator("#barrier.held").wait_for()
    page.locator(f"#history tr[data-run-id='{run_id}']").wait_for()
    tab.shot("dashboard-done.png")

    live = [p for p in tab.seen() if p in ACTIVE]
    assert len(live) >= 2 and tab.seen()[-1] == "DONE", tab.seen()  # phases shown as they came
    times = page.locator("#stepper li.done:not([data-phase=IDLE]) .time").all_inner_texts()
    assert len(times) == 4 and all(re.fullmatch(r"[\d.]+ (ms|s)", t) for t in times), times
    assert int(page.get_attribute("#chart", "data-points") or 0) >= 2
    assert "gap" in page.inner_text("#barrier")
    row = page.locator(f"#history tr[data-run-id='{run_id}']")
    assert "DONE" in row.inner_text() and "8,000" in row.inner_text() and "held" in row.inner_text()
    link = row.locator("a").get_attribute("href")
    assert link == f"/pedidos/runs/{run_id}"
    assert page.request.get(api.base + link).json()["runId"] == run_id
    assert "workMs" in page.inner_text("#settings") and "0.5" in page.inner_text("#settings")
    log = page.inner_text("#log")
    assert f"run={run_id}" in log and "phase=DONE" in log
    assert not (Path(api_env["HARNESS_DATA_DIR"]) / "harness.log").exists()
    assert "100.0 %" in page.inner_text("#eta")
    tab.check_clean()


def test_a_run_is_cancelled_from_the_page(browser: Any, api: Api) -> None:
    tab = Page(browser, api).open()
    page = tab.page
    tab.live()
    tab.fill(quantity=20_000, workMs=1, ordersPerJob=100)
    page.click("#start")
    page.locator("#message.ok", has_text="started").wait_for()
    run_id = _run_id(page.inner_text("#message"))
    tab.wait_phase("WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN")
    page.uncheck("#remove-pending")
    page.click("#cancel")
    page.locator("#message.ok", has_text=f"run {run_id} cancelled").wait_for()
    tab.wait_phase("ABORTED")
    page.locator(f"#history tr[data-run-id='{run_id}'] .status-ABORTED").wait_for()
    page.locator("#stepper li.ended.ABORTED").wait_for()
    tab.shot("dashboard-cancelled.png")
    record = api.http.get(f"/pedidos/runs/{run_id}").json()
    assert record["phase"] == "ABORTED" and record["cancel"]["removePending"] is False
    assert page.locator("#cancel").is_disabled()
    tab.check_clean()


def test_with_a_token_a_start_is_refused_without_it_and_accepted_with_it(browser: Any, serve: Any) -> None:
    api = serve(HARNESS_API_TOKEN=TOKEN)
    tab = Page(browser, api, allowed=("status of 401",)).open()
    page = tab.page
    tab.live()
    assert page.locator("#token-box").is_visible()
    tab.fill(quantity=2_000)
    page.click("#start")
    page.locator("#message.error", has_text="needs the API token").wait_for()
    assert api.status()["lastRunId"] is None  # nothing started

    page.fill("#token", TOKEN)
    page.click("#start")
    page.locator("#message.ok", has_text="started").wait_for()
    run_id = _run_id(page.inner_text("#message"))
    tab.wait_phase("DONE")
    assert api.status()["lastRunId"] == run_id
    assert page.evaluate("sessionStorage.getItem('harness.apiToken')") == TOKEN
    assert page.evaluate("localStorage.length") == 0
    posts = [r for r in tab.requests if r.method == "POST"]
    assert len(posts) == 2 and posts[-1].headers.get("authorization") == f"Bearer {TOKEN}"
    assert "authorization" not in posts[0].headers
    assert not [r.url for r in tab.requests if TOKEN in r.url]  # never in a URL
    tab.shot("dashboard-token.png")
    tab.check_clean()


def test_the_page_recovers_when_the_server_restarts_mid_run(browser: Any, serve: Any) -> None:
    first = serve()
    tab = Page(browser, first, allowed=("net::ERR_", "status of 50")).open()
    page = tab.page
    tab.live()
    tab.fill(quantity=12_000, workMs=0.5, ordersPerJob=200)
    page.click("#start")
    page.locator("#message.ok", has_text="started").wait_for()
    run_id = _run_id(page.inner_text("#message"))
    tab.wait_phase("WAITING_VIP_DRAIN", "ENQUEUE_NORMAL", "WAITING_NORMAL_DRAIN")

    assert first.stop(signal.SIGTERM) == -signal.SIGTERM  # the run goes on without it
    page.locator("#conn.down").wait_for()
    tab.shot("dashboard-server-down.png")
    second = serve(port=first.port)
    page.locator("#conn.live").wait_for()
    assert page.inner_text("#run-id") == run_id
    tab.wait_phase("DONE")
    page.locator("#barrier.held").wait_for()
    page.locator(f"#history tr[data-run-id='{run_id}']").wait_for()
    tab.shot("dashboard-restarted.png")
    assert second.status()["lastRunId"] == run_id
    assert int(page.get_attribute("#chart", "data-points") or 0) >= 2
    assert [m for m in tab.console if "net::ERR_" in m], "the server was never seen gone"
    # The log stream went on from its last event (Last-Event-ID): no line twice, none lost.
    page.locator("#log", has_text="phase=DONE").wait_for()
    log = page.inner_text("#log")
    assert log.count(f"phase run={run_id} phase=GENERATING") == 1, log
    assert log.count(f"finished run={run_id} phase=DONE") == 1, log
    tab.check_clean()


# ReDoc's sidebar always asks for Redocly's logo from their CDN (hidden by ReDoc when it fails
# to load): the one outside request the docs make, refused here like any other.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_the_docs_render_offline(browser: Any, api: Api) -> None:
    tab = Page(browser, api, allowed=("net::ERR_FAILED",)).open("/docs")
    tab.page.locator(".swagger-ui .opblock").first.wait_for()
    assert tab.page.locator(".swagger-ui .opblock").count() >= 17
    tab.shot("docs-swagger.png")
    tab.open("/redoc")
    tab.page.get_by_text("/pedidos/generate").first.wait_for()
    tab.shot("docs-redoc.png")
    assert set(tab.outside) <= {REDOC_LOGO}, tab.outside
    tab.outside.clear()
    tab.check_clean()
