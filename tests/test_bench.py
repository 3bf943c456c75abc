"""The benchmark runs end to end at a small N, so it cannot rot. Its figures are printed,
never asserted against a speed: only their consistency is checked here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.config import Settings
from harness.store import open_store


def test_bench_measures_everything_at_small_n(kernel_env: Settings, tmp_path: Path) -> None:
    """(``kernel_env``: the fixed-cost sweep's kernels keep their state under tmp_path.)"""
    settings = kernel_env
    out = tmp_path / "bench.json"
    env = {"REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(settings.data_dir),
           "HARNESS_REPORTS_DIR": str(tmp_path / "reports"), "MONGO_URI": ""}
    result = CliRunner().invoke(
        main, ["bench", "-n", "3000", "--chunk-size", "500", "-j", "100",
               "--concurrency-levels", "1,2", "-o", str(out)],
        env=env, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["n"] == 3000 and doc["backend"] == "sqlite"
    floor, e2e = doc["storeFloor"], doc["endToEnd"]
    assert floor["insertS"] > 0 and floor["updateS"] > 0
    assert floor["totalS"] == pytest.approx(floor["insertS"] + floor["updateS"], abs=0.002)
    assert e2e["ratioToFloor"] == pytest.approx(e2e["totalS"] / floor["totalS"], rel=0.02)
    assert doc["generator"]["ordersPerSec"] > 0
    assert doc["queueOverhead"]["jobs"] == 30 and doc["queueOverhead"]["jobsPerSec"] > 0
    status = doc["statusLatencyMs"]
    assert status["samples"] > 0 and 0 < status["p50"] <= status["p95"] <= status["max"]
    # Sizes N/10, 3N/10, N, each a real run that held its barrier, with its memory.
    assert [r["n"] for r in doc["sizes"]] == [300, 900, 3000]
    assert all(r["barrierHeld"] and r["coordinatorMaxRssMb"] > 0 and r["workerMaxRssMb"] > 0
               for r in doc["sizes"])
    assert [r["c"] for r in doc["concurrency"]] == [1, 2]
    assert {t["name"].split(",")[0] for t in doc["targets"]} >= {"end to end", "end to end / store floor"}
    # The targets that depend on N are not judged at 3,000 orders; the others are.
    by_name = {t["name"].split(",")[0]: t for t in doc["targets"]}
    for name in ("end to end", "end to end / store floor"):
        assert by_name[name]["met"] is None and "not applicable below N = 1,000,000" in by_name[name]["note"]
    assert all(t["met"] in (True, False) for n, t in by_name.items() if not n.startswith("end to end"))
    assert "n/a" in result.output
    # Fixed costs: harness run -n 1000 after an N-order run, twice at this N; a sweep of four
    # 2,000-order points. Each figure is wall time less the run's own total: positive.
    run, point = doc["fixedCosts"]["run"], doc["fixedCosts"]["sweepPoint"]
    assert run["tries"] == 2 and run["afterOrders"] == 3000
    assert 0 < run["minS"] <= run["medianS"] <= run["maxS"]
    assert point["points"] == 4 and 0 < point["medianS"] <= point["maxS"]
    assert (tmp_path / "reports" / point["sweepId"] / "sweep.json").exists()
    # The table printed is the same result.
    assert "end to end / floor" in result.output and f"{e2e['ratioToFloor']}" in result.output
    assert "fixed costs:" in result.output and "sweep point at 2,000 orders" in result.output
    # Every run is in the history (4 measured, 2 x 2 for the fixed cost of a run, 4 sweep
    # points); the floor left no orders behind but the last run's.
    store = open_store(settings)
    try:
        assert len(store.list_runs()) == 12
        assert store.count_orders() == 2000
    finally:
        store.close()


def test_bench_refuses_bad_sizes_before_doing_anything(settings: Settings) -> None:
    env = {"REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(settings.data_dir)}
    for args, message in ((["--sizes", "10,-5"], "must be >= 1"),
                          (["--sizes", "ten"], "--sizes ten: quantity must be an integer"),
                          (["--concurrency-levels", "0"], "must be >= 1"),
                          (["--sizes", "2000000"], "above MAX_ORDERS")):
        result = CliRunner().invoke(main, ["bench", "-n", "100", *args], env=env)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (settings.data_dir / "harness.sqlite3").exists()


def test_bench_refuses_an_n_that_is_not_the_largest_size(settings: Settings) -> None:
    # It used to run at N = 10,000 without a word.
    env = {"REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["bench", "-n", "20000", "--sizes", "5000,10000"], env=env)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "-n/--quantity 20,000" in line and "--sizes 5000,10000" in line
    assert not (settings.data_dir / "harness.sqlite3").exists()
