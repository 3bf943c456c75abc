"""Experiments through notebooks: sweeps run ``run.ipynb`` once per grid point and repeat
with papermill, and reports execute ``report.ipynb`` and turn it into one HTML page.

Executed notebooks are kept under ``reports/<sweep id>/``, failed ones included: they are
the evidence of what each point did. Connection strings reach the kernels through the
environment, never as notebook parameters, because papermill writes parameters into the
executed notebook.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import results
from harness.codec import to_json
from harness.compare import ALPHA, FACTOR
from harness.config import SWEEPABLE, Settings, redact
from harness.errors import ConfigError, NotebookMissing
from harness.extras import require
from harness.launch import child_env
from harness.logs import event
from harness.record import Environment, failed_point, new_run_id
from harness.store import open_store

log = logging.getLogger("harness")
CHECKOUT_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "python3"


def notebook(settings: Settings, name: str) -> Path:
    path = (settings.notebooks_dir or CHECKOUT_NOTEBOOKS) / name
    if not path.exists():
        raise NotebookMissing(
            f"notebook {path} is missing; run from a checkout or set HARNESS_NOTEBOOKS_DIR"
        )
    return path


def new_sweep_id() -> str:
    return f"sweep-{datetime.now(UTC):%Y%m%dT%H%M%S}"


@contextmanager
def _kernel_env(settings: Settings) -> Iterator[None]:
    """Every setting, for the kernels: papermill hands this process's environment to each
    kernel it starts, so it becomes :func:`harness.launch.child_env` for the duration (the
    kernel's own parameters then override the run's shape); restored afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(child_env(settings))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def execute(source: Path, output: Path, parameters: dict[str, Any]) -> None:
    """Run a notebook with papermill; raises PapermillExecutionError after writing ``output``."""
    papermill = require("papermill")
    from traitlets.config import Config

    output.parent.mkdir(parents=True, exist_ok=True)
    # Kernels on local sockets (IPC), not TCP: nothing listens on the network, and no
    # kernel warns about unencrypted TCP on every start.
    papermill.execute_notebook(str(source), str(output), parameters=parameters,
                               kernel_name=KERNEL, progress_bar=False, cwd=str(source.parent),
                               config=Config({"KernelManager": {"transport": "ipc"}}))


@dataclass
class SweepPoint:
    """One run of a sweep: its grid values, repeat and seed, and how it went."""

    values: dict[str, Any]
    repeat: int
    seed: int
    run_id: str
    notebook: str
    status: str = "pending"
    error: str | None = None
    wall_s: float | None = None
    warmup: bool = False  # a warm-up run: recorded, left out of every statistic


@dataclass
class SweepManifest:
    """What a sweep ran: saved as ``sweep.json`` beside its notebooks."""

    sweep_id: str
    grid: dict[str, list[Any]]
    repeats: int
    points: list[SweepPoint] = field(default_factory=list)
    warmup: int = 0
    wall_time_s: float | None = None
    report: str | None = None

    @property
    def failed(self) -> int:
        return sum(p.status == "failed" for p in self.points)

    def to_json(self) -> dict[str, Any]:
        return {**to_json(self), "failed": self.failed}


def grid_points(settings: Settings, grid: Mapping[str, Sequence[Any]], repeats: int,
                sweep_id: str, warmup: int = 0) -> list[tuple[dict[str, Any], int, Settings]]:
    """Every (values, repeat, settings) of the sweep, each point's settings built and so
    validated before anything runs: a bad value raises ConfigError naming it.

    ``warmup`` rounds come first (their settings say ``warmup``; their repeat numbers
    start at 0 too), then the measured repeats; each round goes through every point, so
    repeats are interleaved across points and a slow minute of the machine does not land
    on one point."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an integer >= 1, got {repeats!r}", "repeats")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}", "warmup")
    if unknown := [name for name in grid if name not in SWEEPABLE]:
        raise ConfigError(f"cannot sweep {', '.join(map(repr, unknown))}; sweepable settings: "
                          f"{', '.join(SWEEPABLE)}", unknown[0])
    if empty := [name for name, values in grid.items() if not values]:
        raise ConfigError(f"the grid gives {empty[0]} no values", empty[0])
    names = list(grid)
    out = []
    rounds = [(True, w) for w in range(warmup)] + [(False, r) for r in range(repeats)]
    for is_warmup, repeat in rounds:
        for combo in itertools.product(*(grid[n] for n in names)):
            values = dict(zip(names, combo, strict=True))
            seed = values.get("seed", settings.seed if settings.seed is not None else repeat + 1)
            out.append((values, repeat, settings.replace(**values, seed=seed, sweep_id=sweep_id,
                                                         warmup=is_warmup)))
    return out


def sweep(
    settings: Settings, grid: Mapping[str, Sequence[Any]], repeats: int,
    sweep_id: str | None = None, with_report: bool = True, baseline: str | None = None,
    report: Callable[[str], None] = lambda line: None, warmup: int = 0,
) -> SweepManifest:
    """Run every point of ``grid`` (setting name -> values; the other settings as
    ``settings`` say) ``repeats`` times through ``run.ipynb``, after ``warmup`` warm-up
    rounds. Returns the manifest, also saved as ``sweep.json``.

    Every point, and the baseline (a sweep id or an exported file), is checked before
    anything runs or is written: a bad one raises ConfigError or NotFound naming it. A point
    that fails as it runs (its run refused, or ending in error) is recorded with its error,
    and the sweep goes on.
    """
    sweep_id = sweep_id or new_sweep_id()
    points = grid_points(settings, grid, repeats, sweep_id, warmup)
    if baseline:
        results.resolve(settings, baseline, "baseline")
    folder = Path(settings.reports_dir) / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    manifest = SweepManifest(sweep_id, {k: list(v) for k, v in grid.items()}, repeats,
                             warmup=warmup)
    started = time.perf_counter()
    for k, (values, repeat, point_settings) in enumerate(points):
        kind = "w" if point_settings.warmup else "r"
        point = SweepPoint(values, repeat, int(point_settings.seed or 0), new_run_id(),
                           f"run-{k:03d}-{_label(values)}-{kind}{repeat}.ipynb",
                           warmup=point_settings.warmup)
        log.info(event("sweep-point", sweep=sweep_id, point=k + 1, of=len(points),
                       repeat=repeat, warmup=point_settings.warmup or None, **values))
        _run_point(point_settings, folder, point)
        manifest.points.append(point)
        report(f"point {k + 1}/{len(points)}: {_describe(values)}, "
               f"{'warm-up' if point.warmup else 'repeat'} {repeat}: "
               f"{point.status} in {point.wall_s:.1f} s"
               + (f" ({point.error})" if point.error else ""))
    manifest.wall_time_s = round(time.perf_counter() - started, 1)
    (folder / "sweep.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    if with_report:
        manifest.report = str(build_report(settings, [sweep_id], baseline=baseline,
                                           output=folder / "report.html"))
        (folder / "sweep.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest


def _run_point(settings: Settings, folder: Path, point: SweepPoint) -> None:
    """Run one point's notebook; a point whose run never recorded itself gets a record."""
    params = {**point.values, "quantity": settings.quantity, "seed": point.seed,
              "sweep_id": settings.sweep_id, "run_id": point.run_id}
    t = time.perf_counter()
    try:
        with _kernel_env(settings):
            execute(notebook(settings, "run.ipynb"), folder / point.notebook, params)
        point.status = "ok"
    except Exception as exc:
        point.status, point.error = "failed", redact(_short_error(exc))
    point.wall_s = round(time.perf_counter() - t, 3)
    if point.status == "failed":
        store = open_store(settings)
        try:
            if store.get_run(point.run_id) is None:
                record = failed_point(point.run_id, {**settings.public_dict(), "seed": point.seed},
                                      point.error or "failed")
                # its backend, so that the report shows it at its own parameter point
                record.environment = Environment(store={"backend": settings.backend})
                store.save_run(record, fenced=False)
        finally:
            store.close()


def _label(values: Mapping[str, Any]) -> str:
    return "-".join(f"{name}{re.sub(r'[^A-Za-z0-9.]+', '_', str(v))}" for name, v in values.items())


def _describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {v}" for name, v in values.items())


def _short_error(exc: Exception) -> str:
    name, value = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"{name}: {value}".strip()[:500]


def build_report(
    settings: Settings, sweep_ids: Sequence[str] | None = None, baseline: str | None = None,
    output: Path | None = None, latest: int = 20, factor: float = FACTOR, alpha: float = ALPHA,
) -> Path:
    """Execute ``report.ipynb`` for the given sweeps (or the latest runs) against an optional
    baseline (a sweep id or an exported file), and write it as one self-contained HTML page
    without code.

    What is asked for is checked first, in one line each: a sweep or baseline without runs
    is NotFound naming it, no runs at all is NoRuns; no kernel starts for either."""
    chosen = results.select(settings, list(sweep_ids or []), latest)
    if baseline:
        base = results.resolve(settings, baseline, "--baseline")
        if base.source != "store":  # the kernel starts in notebooks/: an absolute path
            baseline = str(Path(base.source).resolve())
    name = "-".join(sweep_ids) if sweep_ids else f"latest-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    output = Path(output) if output else Path(settings.reports_dir) / f"report-{name}.html"
    executed = output.with_suffix(".ipynb")
    with _kernel_env(settings):
        execute(notebook(settings, "report.ipynb"), executed, {
            "sweep_ids": list(sweep_ids or []), "baseline": baseline or "", "latest": latest,
            "factor": factor, "alpha": alpha, "links_from": str(output.parent.resolve()),
        })
    output.write_text(to_html(executed, title=f"Benchmark report: {chosen.label}"))
    log.info(event("report", sweeps=",".join(sweep_ids or []) or None, html=str(output)))
    return output


def notebooks_of(settings: Settings, sweep_ids: Iterable[str]) -> dict[str, Path]:
    """Run id -> its executed notebook, from the sweeps' manifests (``sweep.json``) under
    the reports folder; runs of sweeps whose folder is elsewhere are simply not linked."""
    out: dict[str, Path] = {}
    for sweep_id in set(sweep_ids):
        folder = Path(settings.reports_dir) / sweep_id
        try:
            manifest = json.loads((folder / "sweep.json").read_text())
        except (OSError, ValueError):
            continue
        for point in manifest.get("points", []):
            path = folder / str(point.get("notebook", ""))
            if point.get("runId") and path.is_file():
                out[point["runId"]] = path.resolve()
    return out


def to_html(executed: Path, title: str | None = None) -> str:
    """The executed notebook as HTML: outputs only, figures embedded as PNG, no script
    fetched from the network, passwords redacted; ``title`` is the page's (else the
    notebook's ``title`` metadata, else its file name: never "Notebook")."""
    nbformat = require("nbformat")
    HTMLExporter = require("nbconvert").HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.log.setLevel(logging.ERROR)  # not a warning per figure without alt text
    nb = nbformat.read(executed, as_version=4)
    nb.metadata["title"] = title or nb.metadata.get("title") or executed.stem
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", "", body)
    body = re.sub(r"<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*>", "", body)
    return redact(body)
