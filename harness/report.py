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
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from harness import bounds, history, results
from harness.bounds import MAX_SWEEP_RUNS
from harness.codec import to_json
from harness.compare import ALPHA, FACTOR
from harness.config import STORE_AXIS, SWEEPABLE, Settings, redact, shown_point, with_point
from harness.connection import connect_redis
from harness.errors import ConfigError, HarnessError, NotebookMissing
from harness.extras import require, require_installed
from harness.kernels import WarmKernels, engine_name, shutdown_kernel, start_kernel
from harness.launch import child_env
from harness.logs import event
from harness.numbers import count
from harness.parsing import REPEATS, WARMUP
from harness.paths import REPORTS_DIR, check_output_file, usable_dir
from harness.record import Environment, failed_point, new_run_id
from harness.state import Phase, RunState
from harness.store import open_store
from harness.sweep_lock import sweep_lock
from harness.sweeps import point_rate

log = logging.getLogger("harness")
TERMINAL = frozenset({Phase.DONE, Phase.ERROR, Phase.ABORTED})
KERNEL = "python3"


def packaged_notebooks() -> Path:
    """The notebooks shipped in the package (``harness/notebooks/``, package data): the
    checkout's own folder in an editable install, site-packages' in a wheel's."""
    folder = resources.files("harness") / "notebooks"
    # A folder on disk: papermill reads the notebooks by path and kernels start in it (the
    # harness is never imported from a zip file).
    return folder if isinstance(folder, Path) else Path(str(folder))


NOTEBOOKS = packaged_notebooks()
# What sweeps and reports need of the [notebooks] extra: papermill runs the notebooks in an
# ipykernel, nbformat and nbconvert write the HTML, the notebooks chart with pandas,
# matplotlib, and compare with scipy.
NOTEBOOK_MODULES = ("papermill", "nbformat", "nbconvert", "ipykernel", "pandas", "matplotlib", "scipy")


def notebook(settings: Settings, name: str) -> Path:
    """The notebook ``name``: from HARNESS_NOTEBOOKS_DIR when set, else the package's."""
    if settings.notebooks_dir is not None:
        path = settings.notebooks_dir / name
        if not path.is_file():
            raise NotebookMissing(f"HARNESS_NOTEBOOKS_DIR: notebook {path} is missing; unset "
                                  f"HARNESS_NOTEBOOKS_DIR to use the harness's own notebooks")
        return path
    path = NOTEBOOKS / name
    if not path.is_file():
        raise NotebookMissing(f"notebook {path} is missing from the installed harness; "
                              f"reinstall it, or set HARNESS_NOTEBOOKS_DIR to a folder holding it")
    return path


def preflight(settings: Settings, *names: str) -> dict[str, Path]:
    """Check that a sweep or a report can run, before it says or writes anything: the
    notebooks ``names`` exist (NotebookMissing) and the [notebooks] extra is installed
    (MissingExtra), each one line. The notebooks by name."""
    found = {name: notebook(settings, name) for name in names}
    require_installed(*NOTEBOOK_MODULES)
    return found


def new_sweep_id() -> str:
    return f"sweep-{datetime.now(UTC):%Y%m%dT%H%M%S}"


def execute(source: Path, output: Path, parameters: dict[str, Any], km: Any = None,
            env: Mapping[str, str] | None = None) -> None:
    """Run a notebook with papermill; raises PapermillExecutionError after writing ``output``.

    ``km``: a kernel already started (see :mod:`harness.kernels`), the caller's to shut
    down; else one is started now with ``env`` (default: this process's environment) and
    shut down when the notebook ends. Kernels use local sockets (IPC) in a folder of their own, not TCP:
    nothing listens on the network, and nothing is left in the notebooks' folder.
    """
    papermill = require("papermill")

    output.parent.mkdir(parents=True, exist_ok=True)
    own = km is None
    if km is None:
        km = start_kernel(os.environ if env is None else env, source.parent, warm_up="")
    with _ctrl_c_reaches_the_kernel(km.provisioner.pid) as interrupted:
        try:
            papermill.execute_notebook(str(source), str(output), parameters=parameters,
                                       kernel_name=KERNEL, progress_bar=False,
                                       cwd=str(source.parent), km=km, engine_name=engine_name())
        except Exception:
            if interrupted.is_set():
                raise KeyboardInterrupt from None
            raise
        finally:
            if own:  # a kernel given is the caller's (a sweep shuts it down in the background)
                shutdown_kernel(km)
    if interrupted.is_set():
        raise KeyboardInterrupt


@contextmanager
def _ctrl_c_reaches_the_kernel(pid: int) -> Iterator[threading.Event]:
    """While a notebook runs, Ctrl-C interrupts its kernel (``pid``) instead of this process;
    kernels warming up for later points are left alone.

    Kernels run in sessions of their own, so the terminal's Ctrl-C reached only papermill,
    which tore the kernel down mid-reply: a ZMQError traceback from the kernel, a
    DeadKernelError one from asyncio, and the run inside left holding its lock. Sent to the
    kernel, the interrupt stops the run there as Ctrl-C stops `harness run` (recorded
    ABORTED, workers stopped, lock freed), the notebook ends, and the caller stops after it.
    A second Ctrl-C interrupts this process at once.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        log.warning("Ctrl-C: stopping the notebook's run (Ctrl-C again to stop at once)")
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


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
    REPEATS.check(repeats)  # as --repeats and --warmup read them
    WARMUP.check(warmup)
    if unknown := [name for name in grid if name not in (*SWEEPABLE, STORE_AXIS)]:
        raise ConfigError(f"cannot sweep {', '.join(map(repr, unknown))}; sweepable settings: "
                          f"{', '.join((*SWEEPABLE, STORE_AXIS))}", unknown[0])
    if empty := [name for name, values in grid.items() if not values]:
        raise ConfigError(f"the grid gives {empty[0]} no values", empty[0])
    points = math.prod(len(values) for values in grid.values())
    if (runs := points * (repeats + warmup)) > MAX_SWEEP_RUNS:  # before any point is built
        raise ConfigError(f"the sweep would make {runs:,} runs ({points:,} point(s) x "
                          f"{repeats + warmup} round(s)); a sweep makes at most "
                          f"{MAX_SWEEP_RUNS:,}", "repeats")
    names = list(grid)
    out = []
    rounds = [(True, w) for w in range(warmup)] + [(False, r) for r in range(repeats)]
    for is_warmup, repeat in rounds:
        for combo in itertools.product(*(grid[n] for n in names)):
            values = dict(zip(names, combo, strict=True))
            seed = values.get("seed", settings.seed if settings.seed is not None else repeat + 1)
            # Every run setting may be in the grid, the seed too (`-p seed=7` was a TypeError);
            # a None in the grid is a value, refused unless the setting takes None.
            # A store axis value chooses the point's store (with_point); the values kept show
            # it by its backend and redacted URL (shown_point): they are logged and saved.
            point = {"seed": seed, "sweep_id": sweep_id, "warmup": is_warmup}
            out.append((shown_point(values), repeat, with_point(settings, values, **point)))
    return out


def sweep(
    settings: Settings, grid: Mapping[str, Sequence[Any]], repeats: int,
    sweep_id: str | None = None, with_report: bool = True, baseline: str | None = None,
    report: Callable[[str], None] = lambda line: None, warmup: int = 0,
) -> SweepManifest:
    """Run every point of ``grid`` (setting name -> values; the other settings as
    ``settings`` say) ``repeats`` times through ``run.ipynb``, after ``warmup`` warm-up
    rounds. Returns the manifest, also saved as ``sweep.json``.

    The notebooks and the [notebooks] extra (:func:`preflight`), every point, and the
    baseline (a sweep id or an exported file), are checked before anything is announced,
    runs or is written: a bad one raises NotebookMissing, MissingExtra, ConfigError or
    NotFound naming it. Another
    sweep running (:mod:`harness.sweep_lock`) raises SweepActive, also before anything is
    written. A point that fails as it runs (its run refused, or ending in error) is recorded
    with its error, and the sweep goes on; Ctrl-C stops the point's run (recorded ABORTED),
    saves the manifest of the points run, and stops the sweep.
    """
    source = preflight(settings, "run.ipynb", *(["report.ipynb"] if with_report else []))["run.ipynb"]
    sweep_id = sweep_id or new_sweep_id()
    points = grid_points(settings, grid, repeats, sweep_id, warmup)
    if baseline:
        results.resolve(settings, baseline, "baseline")
    conn = connect_redis(settings)
    try:
        with sweep_lock(conn, sweep_id):
            folder = usable_dir(Path(settings.reports_dir) / sweep_id, REPORTS_DIR)
            report(f"sweep {sweep_id}: {len(points)} run(s)"
                   + (f", {warmup} warm-up round(s) first" if warmup else ""))
            manifest = SweepManifest(sweep_id, {k: [shown_point({k: v})[k] for v in values]
                                                for k, values in grid.items()}, repeats,
                                     warmup=warmup)
            _sweep(settings, source, points, folder, manifest, report)
            if with_report:
                manifest.report = str(build_report(settings, [sweep_id], baseline=baseline,
                                                   output=folder / "report.html"))
                _save(folder, manifest)
    finally:
        conn.close()
    return manifest


def _sweep(settings: Settings, source: Path, points: list[tuple[dict[str, Any], int, Settings]],
           folder: Path, manifest: SweepManifest, report: Callable[[str], None]) -> None:
    """Run the points in order through ``source`` (run.ipynb), saving the manifest at the
    end (or at a Ctrl-C)."""
    started = time.perf_counter()
    kernels = WarmKernels()
    try:
        for k, (values, repeat, point_settings) in enumerate(points):
            kind = "w" if point_settings.warmup else "r"
            point = SweepPoint(values, repeat, int(point_settings.seed or 0), new_run_id(),
                               f"run-{k:03d}-{_label(values)}-{kind}{repeat}.ipynb",
                               warmup=point_settings.warmup)
            log.info(event("sweep-point", sweep=manifest.sweep_id, point=k + 1, of=len(points),
                           repeat=repeat, warmup=point_settings.warmup or None, **values))
            ahead = {j: points[j][2] for j in range(k + 1, min(k + 1 + kernels.ahead, len(points)))}
            manifest.points.append(point)
            try:
                _run_point(k, point_settings, source, folder, point, kernels, ahead)
                _gather(settings, point_settings, point.run_id)
            except KeyboardInterrupt:
                point.status = "interrupted"
                report(f"point {k + 1}/{len(points)} interrupted; sweep stopped, "
                       f"{folder / 'sweep.json'} lists the points run")
                raise
            rate = point_rate(point_settings, point.run_id) if point.status == "ok" else None
            report(f"point {k + 1}/{len(points)}: {_describe(values)}, "
                   f"{'warm-up' if point.warmup else 'repeat'} {repeat}: "
                   f"{point.status} in {point.wall_s:.1f} s"
                   + (f", {rate}" if rate else "") + (f" ({point.error})" if point.error else ""))
    finally:
        kernels.close()
        manifest.wall_time_s = round(time.perf_counter() - started, 1)
        _save(folder, manifest)


def _store_of(settings: Settings) -> tuple[Any, ...]:
    return (settings.backend, settings.database_url, settings.mongo_uri, settings.mongo_db,
            settings.data_dir.resolve())


def _gather(sweep_settings: Settings, point_settings: Settings, run_id: str) -> None:
    """A point that ran on another store (a sweep over ``store``) recorded itself there; a
    copy of its record goes to the sweep's own store, so that the report, ``compare`` and
    ``export`` find every point (grouped by the backend its record names)."""
    if _store_of(point_settings) == _store_of(sweep_settings):
        return
    try:
        record = history.get_run(point_settings, run_id)
        if record is None:
            return
        target = open_store(sweep_settings)
        try:
            target.close_run(record)  # never over a final record already there
        finally:
            target.close()
    except HarnessError as exc:
        log.warning("sweep: the record of run %s stays in its own store only: %s", run_id, exc)


def _save(folder: Path, manifest: SweepManifest) -> None:
    (folder / "sweep.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


def _run_point(k: int, settings: Settings, source: Path, folder: Path, point: SweepPoint,
               kernels: WarmKernels, ahead: dict[int, Settings]) -> None:
    """Run point ``k``'s notebook in a kernel warmed for it, and start warming those of the
    points ``ahead`` (see :class:`harness.kernels.WarmKernels`). A point whose run never
    recorded itself gets a record. Its wall time counts from asking for its kernel to its
    notebook saved."""
    # The store reaches the kernel through its environment (child_env), as every connection
    # string does: papermill writes parameters into the executed notebook.
    params = {**{k: v for k, v in point.values.items() if k != STORE_AXIS},
              "quantity": settings.quantity, "seed": point.seed,
              "sweep_id": settings.sweep_id, "run_id": point.run_id}
    t = time.perf_counter()
    ended = threading.Event()

    def prepare_next() -> None:  # where priorities cannot be lowered: once this run ended
        if ahead:
            j = min(ahead)
            kernels.prepare(j, child_env(ahead[j]), source.parent, after_run=True)

    watcher = threading.Thread(target=_when_run_ends, name="run-watcher", daemon=True, args=(
        settings, point.run_id, ended, None if kernels.early else prepare_next))
    try:
        km = kernels.take(k, child_env(settings), source.parent)
        for j, later in ahead.items():  # early: at the lowest priority
            kernels.prepare(j, child_env(later), source.parent)
        watcher.start()
        try:
            execute(source, folder / point.notebook, params, km=km)
        finally:
            ended.set()
            kernels.retire(km)
        point.status = "ok"
    except Exception as exc:
        point.status, point.error = "failed", redact(_short_error(exc))
    finally:
        ended.set()
        if watcher.is_alive():
            watcher.join()
    point.wall_s = round(time.perf_counter() - t, 3)
    if point.status == "failed":
        store = open_store(settings)
        try:
            if store.get_run(point.run_id) is None:
                record = failed_point(point.run_id, {**settings.public_dict(), "seed": point.seed},
                                      point.error or "failed")
                # its backend, so that the report shows it at its own parameter point
                record.environment = Environment(store={"backend": settings.backend})
                store.close_run(record)  # atomic: never over a final record
        finally:
            store.close()


def _when_run_ends(settings: Settings, run_id: str, stop: threading.Event,
                   then: Callable[[], None] | None) -> None:
    """Call ``then`` once the live state says run ``run_id`` has ended, or when the point
    is over (``stop``), whichever comes first. A look every 20 ms: one HMGET."""
    if then is None:
        return
    try:
        conn = connect_redis(settings, autostart=False)
        try:
            while not stop.wait(0.02):
                current, phase = RunState(conn).get("runId", "phase")
                if current == run_id and phase in TERMINAL:
                    break
        finally:
            conn.close()
    except Exception:  # Redis trouble is the run's to report; the next kernel just starts later
        log.debug("watching run %s failed", run_id, exc_info=True)
    then()


def _label(values: Mapping[str, Any]) -> str:
    return "-".join(f"{name}{re.sub(r'[^A-Za-z0-9.]+', '_', str(v))}" for name, v in values.items())


def _describe(values: Mapping[str, Any]) -> str:
    """A point's grid values as its line says them: ``quantity 20,000, concurrency 2``."""
    return ", ".join(f"{name} {count(v) if isinstance(v, int) and not isinstance(v, bool) else v}"
                     for name, v in values.items())


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

    What is asked for is checked first, in one line each: the notebook and the [notebooks]
    extra (:func:`preflight`), then a sweep or baseline without runs is NotFound naming it,
    no runs at all is NoRuns; no kernel starts for any."""
    source = preflight(settings, "report.ipynb")["report.ipynb"]
    name = "-".join(sweep_ids) if sweep_ids else f"latest-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if output is not None:
        output = check_output_file(Path(output), "report output")
    else:
        output = check_output_file(Path(settings.reports_dir) / f"report-{name}.html", REPORTS_DIR)
    chosen = results.select(settings, list(sweep_ids or []), latest)
    if baseline:
        base = results.resolve(settings, baseline, "--baseline")
        if base.source != "store":  # the kernel starts in the notebooks' folder: an absolute path
            baseline = str(Path(base.source).resolve())
    executed = output.with_suffix(".ipynb")
    execute(source, executed, {
        "sweep_ids": list(sweep_ids or []), "baseline": baseline or "", "latest": latest,
        "factor": factor, "alpha": alpha, "links_from": str(output.parent.resolve()),
    }, env=child_env(settings))
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
            manifest = bounds.loads(bounds.read_bounded(
                folder / "sweep.json", "sweep manifest", bounds.MAX_RESULTS_BYTES), "sweep.json")
        except (OSError, ValueError):  # BadInput (beyond the bounds) included
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
