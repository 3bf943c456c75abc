"""The notebooks, executed by papermill against the test Redis and the embedded store, and
the HTML report opened in a real headless Chromium."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import nbformat
import pytest
from click.testing import CliRunner
from conftest import chromium_path, free_port, wait_for
from redis import Redis

from harness.cli import main
from harness.config import ConfigError, Settings
from harness.launch import RUN_ID_VAR, SETTING_VARS
from harness.lock import LOCK_KEY, LockHolder
from harness.pipeline import run
from harness.report import NOTEBOOKS, build_report, execute, sweep
from harness.store import open_store

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _outputs(path: Path) -> list[dict[str, Any]]:
    nb = nbformat.read(path, as_version=4)
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _runs(settings: Settings) -> list[dict[str, Any]]:
    store = open_store(settings)
    try:
        return store.list_runs()
    finally:
        store.close()


def test_committed_notebooks_have_no_outputs_and_a_parameters_cell() -> None:
    for name in ("run.ipynb", "sweep.ipynb", "report.ipynb"):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, name


def test_run_notebook_runs_once_and_shows_summary_timeline_and_phases(
    kernel_env: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "run.ipynb"
    execute(NOTEBOOKS / "run.ipynb", out, {
        "quantity": 3_000, "chunk_size": 500, "orders_per_job": 100, "concurrency": 2,
        "seed": 5, "sweep_id": "nb-run"})
    runs = _runs(kernel_env)
    assert len(runs) == 1 and runs[0].phase == "DONE"
    assert runs[0].parameters["sweep_id"] == "nb-run" and runs[0].counts.processed == 3_000
    outputs = _outputs(out)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert 'class="dataframe run-summary"' in html and runs[0].run_id in html
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 4  # the timeline, the phase times, throughput over time, latency
    assert 'class="dataframe latency"' in html
    record = runs[0]
    assert record.timeline is not None and sum(record.timeline.vip + record.timeline.normal) == 3_000
    assert record.latency is not None and record.latency.normal.wait.count == record.counts.normal
    text = "".join(o.get("text", "") for o in outputs)
    assert "100%" in last_bar(text) and "3.00k/3.00k" in last_bar(text), last_bar(text)
    # The summary as `harness run` says it (harness.numbers), not a dump of camelCase fields
    summary = html[html.index('class="dataframe run-summary"'):]
    summary = summary[:summary.index("</table>")]
    assert "<td>barrier</td>" in summary and "<td>held, gap " in summary
    assert "<td>orders</td>" in summary and "3,000 generated" in summary and "<td>DONE</td>" in summary
    assert "<td>sweep</td>" in summary and "<td>nb-run</td>" in summary
    assert not re.search(r"\b[a-z]+[A-Z][A-Za-z]*\b", re.sub(r"<[^>]+>", " ", summary)), summary


def test_sweep_notebook_2x2x2_gives_8_runs_and_a_report_that_renders(
    kernel_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(kernel_env.reports_dir))
    execute(NOTEBOOKS / "sweep.ipynb", tmp_path / "sweep.ipynb", {
        "grid": {"quantity": [2_000], "chunk_size": [500, 1_000], "orders_per_job": [100],
                 "concurrency": [1, 2]},
        "repeats": 2, "sweep_id": "t2x2"})
    runs = [r for r in _runs(kernel_env) if r.param("sweep_id") == "t2x2"]
    assert len(runs) == 8 and all(r.phase == "DONE" for r in runs)
    points = {(r.param("chunk_size"), r.param("concurrency")) for r in runs}
    assert points == {(500, 1), (500, 2), (1_000, 1), (1_000, 2)}
    outputs = _outputs(tmp_path / "sweep.ipynb")
    # A line per point as it ends, as `harness sweep` prints them, then the table of points
    # with each run's throughput from its record, then a link to the report.
    lines = "".join(o.get("text", "") for o in outputs).splitlines()
    assert lines[0] == "sweep t2x2: 8 run(s)"
    assert [line.split(":")[0] for line in lines[1:9]] == [f"point {k}/8" for k in range(1, 9)]
    assert all(", repeat " in line and ": ok in " in line for line in lines[1:9])
    points_html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    table = points_html[points_html.index('class="dataframe sweep-points"'):]
    body = table[table.index("<tbody>"):table.index("</tbody>")]
    assert body.count("<tr>") == 8 and body.count("<td>ok</td>") == 8  # a row per run
    assert "<th>orders/s</th>" in table
    assert all(f"<td>{round(r.throughput.overall)}</td>" in body for r in runs if r.throughput)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    link = re.search(r"\[report\.html\]\(([^)]+)\)", markdown)
    assert link is not None, markdown  # relative to the kernel's folder, the notebook's
    assert (NOTEBOOKS / unquote(link.group(1))).resolve() == (
        kernel_env.reports_dir / "t2x2" / "report.html").resolve()
    folder = kernel_env.reports_dir / "t2x2"
    manifest = json.loads((folder / "sweep.json").read_text())
    assert manifest["failed"] == 0 and len(list(folder.glob("run-*.ipynb"))) == 8
    html = folder / "report.html"
    assert list(folder.glob("*.html")) == [html]
    text = html.read_text()
    assert 'src="http' not in text and "def in_sweeps" not in text  # offline, no code
    assert not re.search(r'<link[^>]*href="https?://', text)
    rendered = _render(html, "report-2x2x2.png")
    # throughput per point, phases per point, timelines per point, windows and gap
    assert len(rendered["images"]) == 4
    assert all(w > 0 and h > 0 and shown > 0 for w, h, shown in rendered["images"])
    assert sorted(rendered["runIds"]) == sorted(r.run_id for r in runs)
    assert rendered["title"] == "Benchmark report: t2x2"
    # each point links to its runs' executed notebooks, relative to the page
    assert len(rendered["points"]) == 4 and len(rendered["links"]) == 8
    assert all(not href.startswith(("/", "file:")) and (folder / href).is_file()
               for href in rendered["links"])


def test_a_report_of_12_points_opens_with_the_verdict_and_fits_1280_px(
    kernel_env: Settings, tmp_path: Path
) -> None:
    """12 points (6 chunk sizes x 2 worker counts, real runs) against a baseline with other
    work per order: the verdict first, settings the same everywhere said once, the baseline
    drawn and its "what changed" line, and nothing wider than a 1,280 px window."""
    chunks = (100, 150, 200, 300, 400, 600)
    for chunk in chunks:
        for workers in (1, 2):
            record = run(kernel_env.replace(quantity=600, chunk_size=chunk, concurrency=workers,
                                            sweep_id="wide", seed=1))
            assert record.is_done, record.error
    for chunk in chunks[:2]:
        record = run(kernel_env.replace(quantity=600, chunk_size=chunk, concurrency=1, work_ms=0.2,
                                        sweep_id="narrow", seed=1))
        assert record.is_done, record.error
    html = build_report(kernel_env, ["wide"], baseline="narrow", output=tmp_path / "wide.html")
    shot = "report-12-points-1280px.png"
    page = _layout(html, 1280, shot)
    width = page["clientWidth"]
    assert page["scrollWidth"] <= width, page  # no horizontal scroll for the page
    for table in page["tables"]:  # nor inside: each table within its box, its box not scrolled
        assert table["scrollWidth"] <= table["clientWidth"], table
        assert table["boxScrollWidth"] <= table["boxClientWidth"], table
        assert table["right"] <= width, table
    assert all(shown <= natural and right <= width for natural, shown, right in page["images"])
    # The verdict is the first thing under the title: the headline, then the ranking.
    assert page["first"][:3] == ["H1", "P", "TABLE"], page["first"]
    assert page["headline"].startswith("fastest: chunk "), page["headline"]
    assert "the next (chunk " in page["headline"] and "orders/s (median of 1)" in page["headline"]
    assert len(page["ranking"]) == 12 and page["ranking"][0].split("\t")[0] == "1"
    # Settings shared by every run once, as "fixed settings", not as columns.
    assert "Fixed settings" in page["text"] and "sweep wide" in page["text"]
    assert "tiers BRONZE=1,PRATA=1,OURO=1,DIAMANTE=1" in page["text"]
    for header in page["runsHeaders"]:
        assert header not in {"sweepId", "sweep", "tierMix", "tiers", "workMs", "backend", "store"}
    assert {"total", "orders/s", "barrier", "coordinator peak MB"} <= set(page["runsHeaders"])
    # The baseline section says what changed, as `harness compare` does.
    assert "changed between the two (points matched on everything else): work ms 0.2 -> 0" \
        in page["text"]
    assert "inconclusive of 2 matched point(s)" in page["text"]
    # throughput (with the baseline), phases, timelines, windows: one y axis each
    assert len(page["images"]) == 4
    assert "dataframe barrier" in page["tableClasses"] and (ARTIFACTS / shot).stat().st_size > 0


def _layout(html: Path, width: int, screenshot: str) -> dict[str, Any]:
    """The page at ``width`` px in headless Chromium: its widths and every table's, the
    first elements under the title, texts; screenshots of the first screen and the whole
    page under test-artifacts/."""
    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(html.as_uri())
            found = page.evaluate("""() => {
              const root = document.documentElement;
              const blocks = Array.from(document.querySelectorAll('h1, h2, p, table, img'))
                .filter(e => !e.closest('table') || e.tagName === 'TABLE');
              const h1 = blocks.findIndex(e => e.tagName === 'H1');
              return {
                scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
                tables: Array.from(document.querySelectorAll('table')).map(t => ({
                  cls: t.className, scrollWidth: t.scrollWidth, clientWidth: t.clientWidth,
                  boxScrollWidth: t.parentElement.scrollWidth,
                  boxClientWidth: t.parentElement.clientWidth,
                  right: t.getBoundingClientRect().right})),
                tableClasses: Array.from(document.querySelectorAll('table')).map(t => t.className),
                images: Array.from(document.images).map(i => [i.naturalWidth,
                  i.getBoundingClientRect().width, i.getBoundingClientRect().right]),
                first: blocks.slice(h1, h1 + 4).map(e => e.tagName),
                headline: (document.querySelector('p.verdict') || {}).innerText || '',
                ranking: Array.from(document.querySelectorAll('table.ranking tbody tr'))
                  .map(r => r.innerText),
                runsHeaders: Array.from(document.querySelectorAll('table.runs thead th'))
                  .map(h => h.innerText),
                text: document.body.innerText,
              };
            }""")
            page.screenshot(path=str(ARTIFACTS / screenshot))
            page.screenshot(path=str(ARTIFACTS / screenshot.replace(".png", "-full.png")),
                            full_page=True)
        finally:
            browser.close()
    return found


def _render(html: Path, screenshot: str) -> dict[str, Any]:
    """Open the page in headless Chromium; the images' rendered sizes, the run table's ids,
    and a screenshot kept under test-artifacts/."""
    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(html.as_uri())
            images = page.evaluate("Array.from(document.images).map(i => "
                                   "[i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])")
            run_ids = page.locator("table.runs tbody tr td:first-child").all_inner_texts()
            failed = page.locator("table.failed tbody tr").all_inner_texts()
            points = page.locator("table.points tbody tr").all_inner_texts()
            links = [a.get_attribute("href") for a in page.locator("table.points a").all()]
            title = page.title()
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        finally:
            browser.close()
    return {"images": images, "runIds": run_ids, "failed": failed, "points": points,
            "links": links, "title": title}


def last_bar(text: str) -> str:
    """The progress bar as a terminal or JupyterLab shows it at the end: its last redraw."""
    bars = [part for part in re.split(r"[\r\n]", text) if part.startswith("processed:")]
    return bars[-1] if bars else ""


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(kernel_env: Settings) -> None:
    # The second point collides with another run (a live process holds the run lock, as
    # when someone starts `harness run` mid-sweep): it fails, the third runs again.
    conn = Redis.from_url(kernel_env.redis_address)
    other = LockHolder.mine("someone-elses-run")  # this live process stands for that run

    def collide(line: str) -> None:
        if line.startswith("point 1/"):
            conn.set(LOCK_KEY, str(other))
        elif line.startswith("point 2/"):
            conn.delete(LOCK_KEY)

    grid = {"quantity": [1_500], "chunk_size": [500, 750, 1000], "orders_per_job": [100],
            "concurrency": [2]}
    manifest = sweep(kernel_env, grid, repeats=1, sweep_id="t-fail", report=collide)
    first, bad, third = manifest.points
    assert first.status == third.status == "ok" and bad.status == "failed"
    assert bad.error is not None
    assert "run someone-elses-run" in bad.error and "is active" in bad.error
    assert (kernel_env.reports_dir / "t-fail" / bad.notebook).exists()  # the evidence
    runs = {r.run_id: r for r in _runs(kernel_env)}
    assert runs[first.run_id].phase == runs[third.run_id].phase == "DONE"
    assert runs[bad.run_id].phase == "ERROR"
    assert manifest.report is not None
    rendered = _render(Path(manifest.report), "report-failed-point.png")
    assert len(rendered["failed"]) == 1 and "someone-elses-run" in rendered["failed"][0]


def test_a_sweep_given_a_mongodb_uri_as_a_flag_stores_its_points_there(
    kernel_env: Settings, mongo_standin: str, tmp_path: Path
) -> None:
    """Before settings crossed into kernels whole (Settings.to_env), a sweep given
    --mongo-uri as a flag ran its points on SQLite without a word. (MongoDB here: the
    litemongo stand-in, or a real server with HARNESS_TEST_MONGO_URI; see conftest.)"""
    env = {"REDIS_URL": kernel_env.redis_address, "HARNESS_DATA_DIR": str(kernel_env.data_dir),
           "HARNESS_REPORTS_DIR": str(kernel_env.reports_dir)}
    result = CliRunner().invoke(main, [
        "sweep", "-n", "1500", "--chunk-sizes", "500", "-j", "100", "-c", "1,2", "-r", "1",
        "--sweep-id", "on-mongo", "--no-report", "--mongo-uri", mongo_standin], env=env)
    assert result.exit_code == 0, result.output
    mongo = _runs(kernel_env.replace(mongo_uri=mongo_standin))
    assert len(mongo) == 2 and all(r.phase == "DONE" and r.backend == "mongo" for r in mongo)
    assert all(r.param("sweep_id") == "on-mongo" for r in mongo)
    assert "s3cret-pw" not in repr([r.to_json() for r in mongo])
    assert _runs(kernel_env) == []  # nothing went to SQLite


def test_a_sweep_with_a_bad_value_is_refused_before_anything_runs(kernel_env: Settings) -> None:
    with pytest.raises(ConfigError, match="chunk_size must be >= 1, got 0"):
        sweep(kernel_env, {"quantity": [1_500], "chunk_size": [500, 0]}, repeats=1, sweep_id="t-bad")
    assert not (kernel_env.reports_dir / "t-bad").exists() and _runs(kernel_env) == []


def test_report_and_sweep_commands(kernel_env: Settings, tmp_path: Path) -> None:
    env = {"REDIS_URL": kernel_env.redis_address, "HARNESS_DATA_DIR": str(kernel_env.data_dir),
           "HARNESS_REPORTS_DIR": str(kernel_env.reports_dir), "MONGO_URI": ""}
    result = CliRunner().invoke(main, ["sweep", "-n", "1500", "--chunk-sizes", "500", "-j", "100",
                                       "-c", "1", "-r", "1", "--warmup", "1", "--sweep-id", "cli"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "sweep cli: 2 runs, 0 failed" in result.output
    assert ("point 1/2: quantity 1,500, chunk_size 500, orders_per_job 100, concurrency 1, "
            "warm-up 0: ok in") in result.output
    assert "point 2/2: quantity 1,500, chunk_size 500, orders_per_job 100, concurrency 1, " \
           "repeat 0: ok in" in result.output
    # The warm-up is recorded as such, and left out of the statistics.
    records = sorted(_runs(kernel_env), key=lambda r: r.started_at or "")
    assert [r.param("warmup") for r in records] == [True, False]
    manifest = json.loads((kernel_env.reports_dir / "cli" / "sweep.json").read_text())
    assert manifest["warmup"] == 1 and [p["warmup"] for p in manifest["points"]] == [True, False]
    out = tmp_path / "mine.html"
    result = CliRunner().invoke(main, ["report", "--sweep", "cli", "-o", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert out.exists() and "Benchmark report: cli" in out.read_text()
    points = out.read_text().split('class="dataframe points"')[1].split("</table>")[0]
    assert "<td>1</td>" in points  # 1 run and 1 warm-up in the point's row
    result = CliRunner().invoke(main, ["report", "--sweep", "cli", "--baseline", "cli", "-o", str(out)],
                                env=env)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert 'class="dataframe baseline"' in text and "0 unchanged, 1 inconclusive" in text
    assert "no test can reach p &lt; 0.05" in text or "no test can reach p < 0.05" in text
    result = CliRunner().invoke(main, ["report"], env={**env, "HARNESS_NOTEBOOKS_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "report.ipynb is missing" in result.output
    for args, message in ((["sweep", "--chunk-sizes", "0"], "must be >= 1"),
                          (["sweep", "--sweep-id", "../x"], "sweep id"),
                          (["report", "--sweep", "a b"], "sweep id")):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_sweep_prints_each_points_rate_and_ends_with_the_ranking(kernel_env: Settings) -> None:
    env = {"REDIS_URL": kernel_env.redis_address, "HARNESS_DATA_DIR": str(kernel_env.data_dir),
           "HARNESS_REPORTS_DIR": str(kernel_env.reports_dir), "MONGO_URI": ""}
    result = CliRunner().invoke(main, ["sweep", "-n", "1000", "--chunk-sizes", "500", "-j", "100",
                                       "-c", "1,2", "-r", "1", "--sweep-id", "ranked", "--no-report"],
                                env=env)
    print(result.output)  # for the record
    assert result.exit_code == 0, result.output
    records = {r.param("concurrency"): r for r in _runs(kernel_env)}
    assert set(records) == {1, 2} and all(r.is_done and r.throughput for r in records.values())
    # Each point's line ends with its run's orders/s, as its record says.
    for k, workers in ((1, 1), (2, 2)):
        rate = records[workers].throughput.overall  # type: ignore[union-attr]
        line = next(x for x in result.output.splitlines() if f"point {k}/2:" in x)
        assert re.search(rf"repeat 0: ok in [0-9.]+ s, {rate:,.0f} orders/s$", line), line
    # Then the ranking: point, n, median orders/s, CI, CV, vs best; the headline last.
    out = result.stdout.splitlines()
    header = next(i for i, x in enumerate(out) if x.lstrip().startswith("#"))
    assert out[header].split() == ["#", "point", "n", "median", "orders/s", "95%", "CI", "CV", "vs",
                                   "best"]
    best = max(records.values(), key=lambda r: r.throughput.overall)  # type: ignore[union-attr]
    first = out[header + 1]
    assert f"workers {best.param('concurrency')}" in first and "1.00\N{MULTIPLICATION SIGN}" in first
    assert f"{best.throughput.overall:,.0f}" in first  # type: ignore[union-attr]
    headline = next(x for x in out if x.startswith("fastest: "))
    assert headline.startswith(f"fastest: workers {best.param('concurrency')}, ")
    assert "inconclusive" in headline and "4 runs a side are needed" in headline
    # The sweep is listed, its best point named; `harness runs` shows the sweep of each run.
    listed = CliRunner().invoke(main, ["sweeps"], env=env)
    assert listed.exit_code == 0, listed.output
    row = listed.stdout.splitlines()[1].split()
    assert row[0] == "ranked" and row[3:6] == ["2", "2", "0"], listed.stdout
    assert f"workers {best.param('concurrency')}: {best.throughput.overall:,.0f} orders/s" \
        in listed.stdout  # type: ignore[union-attr]
    runs = CliRunner().invoke(main, ["runs"], env=env)
    assert runs.stdout.splitlines()[0].split()[:3] == ["runId", "sweepId", "phase"]
    assert all(" ranked " in line for line in runs.stdout.splitlines()[1:])


@pytest.mark.parametrize("command", [
    ["sweep", "-n", "1500", "-c", "1", "-r", "1", "--sweep-id", "nothing"],
    ["sweep", "-n", "1500", "-c", "1", "-r", "1", "--sweep-id", "nothing", "--no-report"],
    ["report", "--sweep", "nothing"],
])
@pytest.mark.parametrize("missing", ["notebook", "extra"])
def test_a_sweep_or_report_that_cannot_run_says_so_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], missing: str
) -> None:
    """Installed without its notebooks (or pointed at a folder without them), or without the
    [notebooks] extra: one line and the error tree's exit code, before the sweep announces
    its runs, contacts Redis or creates a folder (Redis here answers nowhere)."""
    from harness import report

    env = {"REDIS_URL": "redis://127.0.0.1:1", "HARNESS_DATA_DIR": str(tmp_path / "data"),
           "HARNESS_REPORTS_DIR": str(tmp_path / "reports"), "MONGO_URI": ""}
    if missing == "notebook":
        (tmp_path / "empty").mkdir()
        env["HARNESS_NOTEBOOKS_DIR"] = str(tmp_path / "empty")
        expected = (1, f"{'report' if command[0] == 'report' else 'run'}.ipynb is missing")
    else:  # as if pandas were not installed
        monkeypatch.setattr(report, "NOTEBOOK_MODULES", (*report.NOTEBOOK_MODULES, "no_such_module"))
        expected = (2, "this needs the [notebooks] extra (no_such_module is not installed)")
    result = CliRunner().invoke(main, command, env=env)
    assert (result.exit_code, result.output.count("\n")) == (expected[0], 1), result.output
    assert result.output.startswith("harness: error: ") and expected[1] in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == (["empty"] if missing == "notebook" else [])


def test_the_notebooks_are_package_data() -> None:
    """They ship in the wheel (pyproject's package-data) and are found through
    importlib.resources, in a checkout (editable) and installed alike."""
    import tomllib
    from importlib import resources

    assert resources.files("harness") / "notebooks" == NOTEBOOKS
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["report.ipynb", "run.ipynb", "sweep.ipynb"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "notebooks/*.ipynb" in pyproject["tool"]["setuptools"]["package-data"]["harness"]


@pytest.mark.parametrize(("notebook_name", "parameters", "message"), [
    ("run.ipynb", {"quantity": -5}, "notebook parameter quantity=-5: quantity must be >= 1, got -5"),
    ("run.ipynb", {"quantity": 1_000, "work_ms": "slow"},
     "notebook parameter work_ms='slow': work_ms must be a number, got 'slow'"),
    ("sweep.ipynb", {"grid": {"chunk_size": [500, 0], "quantity": [1_000]}},
     "notebook parameter grid['chunk_size']=[500, 0]: chunk_size must be >= 1, got 0"),
    ("sweep.ipynb", {"repeats": "2"},
     "notebook parameter repeats='2': repeats must be an integer, got '2'"),
    ("sweep.ipynb", {"sweep_id": "../x"},
     "notebook parameter sweep_id='../x': sweep id '../x' must be 1-64 letters, digits"),
])
def test_a_bad_notebook_parameter_is_named_and_nothing_is_written(
    kernel_env: Settings, redis_conn: Redis, tmp_path: Path, notebook_name: str,
    parameters: dict[str, Any], message: str,
) -> None:
    import papermill

    out = tmp_path / "out" / notebook_name
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(NOTEBOOKS / notebook_name, out, parameters)
    assert info.value.ename == "ConfigError" and info.value.evalue.startswith(message)
    assert info.value.traceback == [f"ConfigError: {info.value.evalue}"]  # one line, no traceback
    assert _runs(kernel_env) == [] and redis_conn.dbsize() == 0
    assert not kernel_env.reports_dir.exists()


# -- the same wherever they start: the CLI, papermill, JupyterLab --------------------------

PAPERMILL = str(Path(sys.executable).parent / "papermill")  # the command, as users run it


def checkout_copy(tmp_path: Path) -> Path:
    """A checkout of its own (pyproject.toml, the package with its notebooks), so that runs
    started with the default folders write into it, not into this checkout. Processes
    given ``PYTHONPATH`` = this folder import the harness from it, and so find it."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "pyproject.toml", checkout)
    shutil.copytree(ROOT / "harness", checkout / "harness",
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return checkout


def harness_env(tmp_path: Path, redis_url: str, checkout: Path | None = None) -> dict[str, str]:
    """This environment without any harness setting but the test Redis; Jupyter's and
    matplotlib's state under tmp_path; with ``checkout``, the harness imported from it."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARS and k != RUN_ID_VAR}
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
                "MPLCONFIGDIR"):
        folder = tmp_path / "jupyter-env" / var.lower()
        folder.mkdir(parents=True, exist_ok=True)
        env[var] = str(folder)
    # JupyterLab 4 renders only the cells in view ("windowing"); the test reads every
    # cell's output from the page, so it asks Lab to render them all.
    tracker = (Path(env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings" / "@jupyterlab"
               / "notebook-extension" / "tracker.jupyterlab-settings")
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text('{"windowingMode": "none"}')
    env["REDIS_URL"] = redis_url
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    return env


def _call(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[:3]} exited {done.returncode}: {done.stderr[-3000:]}"
    return done


def test_runs_and_reports_land_in_the_checkout_wherever_they_start(
    redis_url: str, tmp_path: Path
) -> None:
    checkout = checkout_copy(tmp_path)
    env = harness_env(tmp_path, redis_url, checkout)  # no HARNESS_DATA_DIR, no REPORTS_DIR
    notebooks, elsewhere = checkout / "harness" / "notebooks", tmp_path / "elsewhere"
    elsewhere.mkdir()
    harness = [sys.executable, "-m", "harness.cli"]
    small = ["-n", "1500", "--chunk-size", "500", "-j", "100", "--no-progress"]
    # The CLI started in the notebooks' folder (where JupyterLab's kernels start) ...
    _call([*harness, "run", *small], notebooks, env)
    # ... papermill started anywhere (its kernel works there) ...
    _call([PAPERMILL, str(notebooks / "run.ipynb"), str(elsewhere / "run.ipynb"),
           "-p", "quantity", "1500", "-p", "chunk_size", "500", "-p", "orders_per_job", "100"],
          elsewhere, env)
    # ... and sweep.ipynb with its kernel in the notebooks' folder, as JupyterLab runs it:
    _call([PAPERMILL, "sweep.ipynb", str(elsewhere / "sweep.ipynb"), "-y",
           "{grid: {quantity: [1500], chunk_size: [500], orders_per_job: [100]}, repeats: 1, "
           "sweep_id: here, with_report: false}"], notebooks, env)
    # all land in the checkout's store and reports, as `harness runs` at its root shows.
    runs = json.loads(_call([*harness, "runs", "--json"], checkout, env).stdout)
    assert len(runs) == 3 and all(r["phase"] == "DONE" for r in runs)
    assert (checkout / "data" / "harness.sqlite3").exists()
    assert json.loads((checkout / "reports" / "here" / "sweep.json").read_text())["failed"] == 0
    assert sorted(p.name for p in checkout.iterdir()) == [
        "data", "harness", "pyproject.toml", "reports"]
    assert sorted(p.name for p in notebooks.iterdir()) == ["report.ipynb", "run.ipynb", "sweep.ipynb"]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["run.ipynb", "sweep.ipynb"]
    # A relative folder the user names is relative to where they are, as any path they type.
    _call([*harness, "run", *small, "--data-dir", "mine"], elsewhere, env)
    assert (elsewhere / "mine" / "harness.sqlite3").exists()
    assert len(json.loads(_call([*harness, "runs", "--json"], checkout, env).stdout)) == 3


def test_the_cli_progress_bar_of_a_done_run_ends_at_100_percent(
    settings: Settings, tmp_path: Path
) -> None:
    env = {**harness_env(tmp_path, settings.redis_address),
           "HARNESS_DATA_DIR": str(settings.data_dir)}
    done = _call([sys.executable, "-m", "harness.cli", "run", "-n", "5000", "--chunk-size", "1000",
                  "-j", "250"], tmp_path, env)
    # Not a terminal here: progress is plain lines, the last one the run's end at 100 %.
    last = [line for line in done.stderr.splitlines() if line.startswith("progress: ")][-1]
    assert last.startswith("progress: 5,000 of 5,000 processed (100%)") and "DONE" in last, \
        done.stderr[-500:]


def _parameter_names(path: Path) -> list[str]:
    cell = next(c for c in nbformat.read(path, as_version=4).cells
                if "parameters" in c.metadata.get("tags", []))
    names = []
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            assert isinstance(target, ast.Name)
            names.append(target.id)
    return names


@pytest.mark.parametrize("name", ["run.ipynb", "sweep.ipynb", "report.ipynb"])
def test_papermill_help_gives_every_parameter_a_type_and_help(name: str) -> None:
    path = NOTEBOOKS / name
    done = subprocess.run([PAPERMILL, "--help-notebook", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown: dict[str, list[str]] = {}
    current = None
    for line in done.stdout.splitlines():
        # "  name: type (default value)", the help after it or on the next line, indented
        if m := re.match(r"^  (\w+): (.+?) \(default (.*?)\)(?:\s+(.*))?$", line):
            current = m.group(1)
            shown[current] = [m.group(2), m.group(4) or ""]
        elif current and line.startswith(" " * 34):
            shown[current][1] += line.strip()
    assert list(shown) == _parameter_names(path), done.stdout
    for parameter, (kind, text) in shown.items():
        assert kind != "Unknown type" and text, f"{name}: {parameter}: {kind!r}, help {text!r}"


def test_papermill_with_a_bad_parameter_stops_at_one_line_naming_it(
    redis_url: str, redis_conn: Redis, tmp_path: Path
) -> None:
    env = {**harness_env(tmp_path, redis_url), "HARNESS_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "bad.ipynb"
    done = subprocess.run([PAPERMILL, str(NOTEBOOKS / "run.ipynb"), str(out),
                           "-p", "quantity", "-5"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    line = "ConfigError: notebook parameter quantity=-5: quantity must be >= 1, got -5"
    # papermill exits 1 for any cell that fails (README says so) and ends with the cell's error.
    assert done.returncode == 1, done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == line
    errors = [o for o in _outputs(out) if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].traceback == [line]  # the evidence, one line too
    assert redis_conn.dbsize() == 0 and not (tmp_path / "data").exists()


@contextmanager
def lab_server(root: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """JupyterLab on ``root`` as `make lab` starts it, on a free port with a token; its
    base URL with the token. Shut down through its API when done (kernels first, then the
    server, as Ctrl-C twice does), killed if it does not stop."""
    import httpx

    port, token = free_port(), secrets.token_hex(16)
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--LabApp.default_url=/lab/tree/harness/notebooks"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/api/status", headers=auth, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with log.open("w") as sink:
        server = subprocess.Popen(args, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: server.poll() is not None or answers(), "JupyterLab to answer", 120)
        assert server.poll() is None, f"JupyterLab exited: {log.read_text()[-2000:]}"
        yield f"{base}/?token={token}"
    finally:
        with suppress(httpx.HTTPError):
            httpx.post(f"{base}/api/shutdown", headers=auth, timeout=30)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _open_run_notebook(page: Any, url: str) -> None:
    """Open run.ipynb from Lab's file browser and wait for its kernel."""
    page.goto(url)  # the default URL: the file browser in harness/notebooks/
    page.locator(".jp-DirListing-item", has_text="run.ipynb").dblclick()
    status = page.locator(".jp-StatusBar-Widget", has_text="| Idle")
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    wait_for(lambda: status.count() or dialog.count(), "the notebook's kernel", 60)
    if dialog.count():  # Lab may ask which kernel: the one the notebook names
        dialog.get_by_role("button", name="Select", exact=True).click()
    status.wait_for()
    news = page.locator(".jp-Notification-Toast").get_by_role("button", name="No", exact=True)
    if news.count():  # "Would you like to get notified about official Jupyter news?"
        news.click()


def _run_all_cells(page: Any, after: int = 0) -> tuple[str, list[list[int]], int]:
    """Run > Run All Cells in the open notebook, wait for every cell (each prompt numbered
    above ``after``, the highest before); the text of the run's output (bar and summary),
    the charts' natural sizes and the highest prompt. Keeps screenshots of both under
    test-artifacts/."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(
        "after => { const prompts = Array.from(document.querySelectorAll("
        "'.jp-CodeCell .jp-InputArea-prompt')).map(p => p.textContent.trim());"
        " return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t)"
        " && Number(t.slice(1, -2)) > after); }",
        arg=after, timeout=180_000)  # every cell ran ("[*]:" while it runs, "[ ]:" before)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.all_inner_texts()
    output = page.locator(".jp-OutputArea-output", has_text="processed:")
    output.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-run.png"))
    images = page.evaluate("Array.from(document.querySelectorAll('.jp-OutputArea-output img'))"
                           ".map(i => [i.naturalWidth, i.naturalHeight])")
    page.locator(".jp-OutputArea-output img").last.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "lab-run-charts.png"))
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    summary = page.locator(".jp-OutputArea-output table.run-summary")  # the summary: a table
    text = output.inner_text() + "\n" + (summary.last.inner_text() if summary.count() else "")
    return text, images, max(int(t.strip()[1:-2]) for t in prompts)


def _git(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-c", "user.name=harness-test", "-c", "user.email=test@invalid",
                           "-c", "commit.gpgsign=false", *args], cwd=checkout,
                          capture_output=True, text=True, timeout=60)


def as_set_up_git_checkout(checkout: Path) -> str:
    """Make the copy a git checkout as a clone after `make setup` is: .gitattributes, its
    files committed, and the notebook filter installed by the script `make setup` runs. Its
    revision."""
    shutil.copy(ROOT / ".gitattributes", checkout)
    assert _git(checkout, "init", "-q").returncode == 0
    done = subprocess.run([str(ROOT / "scripts" / "git-filters"), sys.executable], cwd=checkout,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _git(checkout, "add", ".gitattributes", "pyproject.toml", "harness").returncode == 0
    done = _git(checkout, "commit", "-q", "-m", "checkout")
    assert done.returncode == 0, done.stderr
    return _git(checkout, "rev-parse", "--short", "HEAD").stdout.strip()


def _has_outputs(path: Path) -> bool:
    try:
        return any(c.get("outputs") for c in nbformat.read(path, as_version=4).cells)
    except Exception:  # read while JupyterLab writes it
        return False


def test_run_notebook_in_jupyterlab_runs_to_done_at_100_percent_with_its_charts(
    redis_url: str, tmp_path: Path
) -> None:
    """A new user's way: `make lab`, open run.ipynb from the file browser, Run > Run All
    Cells. The run lands in the checkout's store (its default data folder). Saved with its
    outputs, the notebook leaves the checkout clean (the nbstripout filter `make setup`
    installs), so the next run's record says ``gitDirty: false``."""
    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    checkout = checkout_copy(tmp_path)
    revision = as_set_up_git_checkout(checkout)
    saved = checkout / "harness" / "notebooks" / "run.ipynb"
    env = harness_env(tmp_path, redis_url, checkout)
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with lab_server(checkout, env, tmp_path / "lab.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            try:
                _open_run_notebook(page, url)
                output, images, last = _run_all_cells(page)
                took = time.monotonic() - started
                page.keyboard.press("Control+s")  # File > Save Notebook
                wait_for(lambda: _has_outputs(saved), "JupyterLab to save the notebook", 30)
                # Saved with its outputs, the tracked notebook reads as unchanged through
                # the filter; without it, it would be a change.
                assert _git(checkout, "diff", "--quiet", "HEAD", "--").returncode == 0
                assert _git(checkout, "-c", "filter.nbstripout.clean=cat", "diff", "--quiet",
                            "HEAD", "--").returncode == 1
                _run_all_cells(page, after=last)  # a second run, with the notebook saved
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "lab-run-failed.png"))
                raise
        finally:
            browser.close()
    # What JupyterLab shows: the bar's redraws over one another, its last at 100 %, then the
    # summary; its four charts drawn.
    bars = [line for line in output.splitlines() if line.startswith("processed:")]
    assert len(bars) == 1 and "100%" in bars[0] and "5.00k/5.00k" in bars[0], output
    assert "DONE" in bars[0] and re.search(r"^phase\s+DONE$", output, re.M), output
    # the timeline, the phase times, throughput over time, latency (as the papermill test)
    assert len(images) == 4 and all(w > 0 and h > 0 for w, h in images), images
    store = open_store(Settings.from_env(environ={}, redis_url=redis_url, data_dir=checkout / "data"))
    try:
        runs = store.list_runs()
    finally:
        store.close()
    assert len(runs) == 2 and all(r.phase == "DONE" and r.counts.processed == 5_000 for r in runs)
    # Both runs, the second after the notebook was saved with its outputs: the checkout's
    # revision, not dirty (comparisons would show a false environment difference).
    assert [(r.environment.git_revision, r.environment.git_dirty) for r in runs] == [
        (revision, False), (revision, False)], [r.environment for r in runs]
    assert not (checkout / "harness" / "notebooks" / "data").exists()
    print(f"JupyterLab: started, run.ipynb run to DONE in {took:.1f} s, saved, run again")
