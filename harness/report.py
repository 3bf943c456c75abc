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
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.config import Settings, redact
from harness.connection import connect_redis
from harness.errors import ConfigError, NotebookMissing
from harness.launch import child_env
from harness.logs import event
from harness.paths import REPORTS_DIR, check_output_file, usable_dir
from harness.runs import iso
from harness.store import open_store
from harness.sweep_lock import sweep_lock

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
    """Run a notebook with papermill; raises PapermillExecutionError after writing ``output``,
    and KeyboardInterrupt, once the notebook has stopped, after a Ctrl-C."""
    import papermill
    from traitlets.config import Config

    output.parent.mkdir(parents=True, exist_ok=True)
    # Kernels on local sockets (IPC), not TCP: nothing listens on the network, and no
    # kernel warns about unencrypted TCP on every start.
    with _ctrl_c_reaches_the_kernel() as interrupted:
        try:
            papermill.execute_notebook(str(source), str(output), parameters=parameters,
                                       kernel_name=KERNEL, progress_bar=False,
                                       cwd=str(source.parent),
                                       config=Config({"KernelManager": {"transport": "ipc"}}))
        except Exception:
            if interrupted.is_set():
                raise KeyboardInterrupt from None
            raise
    if interrupted.is_set():
        raise KeyboardInterrupt


@contextmanager
def _ctrl_c_reaches_the_kernel() -> Iterator[threading.Event]:
    """While a notebook runs, Ctrl-C interrupts its kernel instead of this process.

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
        for pid in _kernel_pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _kernel_pids() -> list[int]:
    """This process's kernels: its children running ipykernel (Linux /proc)."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == me and b"ipykernel" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def sweep(
    settings: Settings, chunk_sizes: Sequence[int], orders_per_job: Sequence[int],
    concurrency_levels: Sequence[int], repeats: int, quantity: int,
    sweep_id: str | None = None, with_report: bool = True, baseline: str | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run every grid point ``repeats`` times through ``run.ipynb``; a failed point is
    recorded as failed and the sweep goes on. Returns the manifest (also saved as JSON).

    Every point's values are checked before anything runs or is written: a bad one raises
    ConfigError naming it. Another sweep running (:mod:`harness.sweep_lock`) raises
    SweepActive, also before anything is written. A point that fails as it runs (its run
    refused, or ending in error) is recorded with its error, and the sweep goes on.
    """
    sweep_id = sweep_id or new_sweep_id()
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an integer >= 1, got {repeats!r}", "repeats")
    for chunk, per_job, workers in itertools.product(chunk_sizes, orders_per_job, concurrency_levels):
        settings.replace(quantity=quantity, chunk_size=chunk, orders_per_job=per_job,
                         concurrency=workers, sweep_id=sweep_id)
    conn = connect_redis(settings)
    try:
        with sweep_lock(conn, sweep_id):
            folder = usable_dir(Path(settings.reports_dir) / sweep_id, REPORTS_DIR)
            points = repeats * len(chunk_sizes) * len(orders_per_job) * len(concurrency_levels)
            report(f"sweep {sweep_id}: {points} run(s) of {quantity:,} orders")
            with _kernel_env(settings):
                manifest = _sweep(settings, folder, sweep_id, chunk_sizes, orders_per_job,
                                  concurrency_levels, repeats, quantity, report)
            if with_report:
                manifest["report"] = str(build_report(settings, [sweep_id], baseline=baseline,
                                                      output=folder / "report.html"))
    finally:
        conn.close()
    return manifest


def _sweep(
    settings: Settings, folder: Path, sweep_id: str, chunk_sizes: Sequence[int],
    orders_per_job: Sequence[int], concurrency_levels: Sequence[int], repeats: int, quantity: int,
    report: Callable[[str], None],
) -> dict[str, Any]:
    grid = list(itertools.product(chunk_sizes, orders_per_job, concurrency_levels))
    points: list[dict[str, Any]] = []
    started = time.perf_counter()
    for k, (repeat, (chunk, per_job, workers)) in enumerate(
        itertools.product(range(repeats), grid)
    ):
        params = {"quantity": quantity, "chunk_size": chunk, "orders_per_job": per_job,
                  "concurrency": workers, "seed": settings.seed if settings.seed is not None
                  else repeat + 1, "tier_mix": settings.tier_mix, "work_ms": settings.work_ms,
                  "sweep_id": sweep_id}
        output = folder / f"run-{k:03d}-chunk{chunk}-job{per_job}-c{workers}-r{repeat}.ipynb"
        log.info(event("sweep-point", sweep=sweep_id, point=k + 1, of=len(grid) * repeats,
                       chunk=chunk, perJob=per_job, concurrency=workers, repeat=repeat))
        before = _newest_run_id(settings)
        point: dict[str, Any] = {**params, "repeat": repeat, "notebook": output.name}
        t = time.perf_counter()
        try:
            execute(notebook(settings, "run.ipynb"), output, params)
            point["status"] = "ok"
        except KeyboardInterrupt:
            point["status"] = "interrupted"
            points.append(point)
            _save_manifest(folder, sweep_id, quantity, repeats, chunk_sizes, orders_per_job,
                           concurrency_levels, started, points)
            report(f"point {k + 1}/{len(grid) * repeats} interrupted; sweep stopped, "
                   f"{folder / 'sweep.json'} lists the points run")
            raise
        except Exception as exc:
            point["status"] = "failed"
            point["error"] = redact(_short_error(exc))
        run_id = _newest_run_id(settings)
        point["runId"] = run_id if run_id != before else None
        if point["status"] == "failed" and point["runId"] is None:
            point["runId"] = _record_failed_point(settings, sweep_id, k, params, point["error"])
        points.append(point)
        report(f"point {k + 1}/{len(grid) * repeats}: chunk {chunk}, {per_job}/job, {workers} "
               f"worker(s), repeat {repeat}: {point['status']} in {time.perf_counter() - t:.1f} s"
               + (f" ({point['error']})" if point["status"] == "failed" else ""))
    return _save_manifest(folder, sweep_id, quantity, repeats, chunk_sizes, orders_per_job,
                          concurrency_levels, started, points)


def _save_manifest(
    folder: Path, sweep_id: str, quantity: int, repeats: int, chunk_sizes: Sequence[int],
    orders_per_job: Sequence[int], concurrency_levels: Sequence[int], started: float,
    points: list[dict[str, Any]],
) -> dict[str, Any]:
    manifest = {
        "sweepId": sweep_id, "quantity": quantity, "repeats": repeats,
        "grid": {"chunkSizes": list(chunk_sizes), "ordersPerJob": list(orders_per_job),
                 "concurrency": list(concurrency_levels)},
        "wallTimeS": round(time.perf_counter() - started, 1),
        "failed": sum(p["status"] == "failed" for p in points), "points": points,
    }
    (folder / "sweep.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _newest_run_id(settings: Settings) -> str | None:
    store = open_store(settings)
    try:
        runs = store.list_runs(1)
    finally:
        store.close()
    return runs[0]["runId"] if runs else None


def _short_error(exc: Exception) -> str:
    name, value = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"{name}: {value}".strip()[:500]


def _record_failed_point(
    settings: Settings, sweep_id: str, k: int, params: dict[str, Any], error: str
) -> str:
    """A point that failed before its run could record itself still leaves a record, so the
    report lists it."""
    run_id = f"{sweep_id}-point{k:03d}-failed"
    store = open_store(settings)
    try:
        store.save_run({"runId": run_id, "startedAt": iso(time.time()), "phase": "ERROR",
                        "error": error, "parameters": params})
    finally:
        store.close()
    return run_id


def build_report(
    settings: Settings, sweep_ids: Sequence[str] | None = None, baseline: str | None = None,
    output: Path | None = None, latest: int = 20, factor: float = 1.2,
) -> Path:
    """Execute ``report.ipynb`` for the given sweeps (or the latest runs) and write it as
    one self-contained HTML page without code."""
    name = "-".join(sweep_ids) if sweep_ids else f"latest-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    if output is not None:
        output = check_output_file(Path(output), "report output")
    else:
        output = check_output_file(Path(settings.reports_dir) / f"report-{name}.html", REPORTS_DIR)
    executed = output.with_suffix(".ipynb")
    with _kernel_env(settings):
        execute(notebook(settings, "report.ipynb"), executed, {
            "sweep_ids": list(sweep_ids or []), "baseline": baseline or "", "latest": latest,
            "factor": factor,
        })
    output.write_text(to_html(executed))
    log.info(event("report", sweeps=",".join(sweep_ids or []) or None, html=str(output)))
    return output


def to_html(executed: Path) -> str:
    """The executed notebook as HTML: outputs only, figures embedded as PNG, no script
    fetched from the network, passwords redacted."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.log.setLevel(logging.ERROR)  # not a warning per figure without alt text
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    body = re.sub(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", "", body)
    body = re.sub(r"<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*>", "", body)
    return redact(body)
