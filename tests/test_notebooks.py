"""The notebooks, executed by papermill against the test Redis and the embedded store, and
the HTML report opened in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from redis import Redis

from harness.cli import main
from harness.config import ConfigError, Settings
from harness.lock import LOCK_KEY, LockHolder
from harness.report import CHECKOUT_NOTEBOOKS, execute, sweep
from harness.store import open_store

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def kernel_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Kernels find the test Redis and store through the environment, and write their
    Jupyter and matplotlib state under tmp_path, not the home folder."""
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
                "MPLCONFIGDIR"):
        folder = tmp_path / "jupyter" / var.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("REDIS_URL", settings.redis_address)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(settings.data_dir.resolve()))
    monkeypatch.setenv("MONGO_URI", "")
    return settings.replace(reports_dir=tmp_path / "reports")


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
        nb = nbformat.read(CHECKOUT_NOTEBOOKS / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, name


def test_run_notebook_runs_once_and_shows_summary_timeline_and_phases(
    kernel_env: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "run.ipynb"
    execute(CHECKOUT_NOTEBOOKS / "run.ipynb", out, {
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
    assert "barrier" in text and "DONE" in text


def test_sweep_notebook_2x2x2_gives_8_runs_and_a_report_that_renders(
    kernel_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(kernel_env.reports_dir))
    execute(CHECKOUT_NOTEBOOKS / "sweep.ipynb", tmp_path / "sweep.ipynb", {
        "grid": {"quantity": [2_000], "chunk_size": [500, 1_000], "orders_per_job": [100],
                 "concurrency": [1, 2]},
        "repeats": 2, "sweep_id": "t2x2"})
    runs = [r for r in _runs(kernel_env) if r.param("sweep_id") == "t2x2"]
    assert len(runs) == 8 and all(r.phase == "DONE" for r in runs)
    points = {(r.param("chunk_size"), r.param("concurrency")) for r in runs}
    assert points == {(500, 1), (500, 2), (1_000, 1), (1_000, 2)}
    points_html = "".join(o.get("data", {}).get("text/html", "")
                          for o in _outputs(tmp_path / "sweep.ipynb"))
    table = points_html[points_html.index('class="dataframe sweep-points"'):]
    body = table[table.index("<tbody>"):table.index("</tbody>")]
    assert body.count("<tr>") == 8 and body.count("<td>ok</td>") == 8  # a row per run
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


def _render(html: Path, screenshot: str) -> dict[str, Any]:
    """Open the page in headless Chromium; the images' rendered sizes, the run table's ids,
    and a screenshot kept under test-artifacts/."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (HARNESS_REQUIRE_BROWSER=1): scripts/ensure-chromium")
        pytest.skip("no chromium on PATH (scripts/ensure-chromium installs it)")
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
    assert ("point 1/2: quantity 1500, chunk_size 500, orders_per_job 100, concurrency 1, "
            "warm-up 0: ok in") in result.output
    assert "point 2/2: quantity 1500, chunk_size 500, orders_per_job 100, concurrency 1, " \
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
    assert 'class="dataframe baseline"' in text and "0 slower, 0 faster, 1 unchanged" in text
    assert "too few runs for p &lt; 0.05" in text or "too few runs for p < 0.05" in text
    result = CliRunner().invoke(main, ["report"], env={**env, "HARNESS_NOTEBOOKS_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "report.ipynb is missing" in result.output
    for args, message in ((["sweep", "--chunk-sizes", "0"], "must be >= 1"),
                          (["sweep", "--sweep-id", "../x"], "sweep id"),
                          (["report", "--sweep", "a b"], "sweep id")):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize(("notebook_name", "parameters", "message"), [
    ("run.ipynb", {"quantity": -5}, "quantity must be >= 1, got -5"),
    ("run.ipynb", {"quantity": 1_000, "work_ms": "slow"}, "work_ms must be a number, got 'slow'"),
    ("sweep.ipynb", {"grid": {"chunk_size": [500, 0], "quantity": [1_000]}},
     "chunk_size must be >= 1, got 0"),
    ("sweep.ipynb", {"repeats": "2"}, "repeats must be an integer >= 1, got '2'"),
])
def test_a_bad_notebook_parameter_is_named_and_nothing_is_written(
    kernel_env: Settings, redis_conn: Redis, tmp_path: Path, notebook_name: str,
    parameters: dict[str, Any], message: str,
) -> None:
    import papermill

    out = tmp_path / "out" / notebook_name
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(CHECKOUT_NOTEBOOKS / notebook_name, out, parameters)
    assert info.value.ename == "ConfigError" and message in info.value.evalue
    assert _runs(kernel_env) == [] and redis_conn.dbsize() == 0
    assert not kernel_env.reports_dir.exists()
