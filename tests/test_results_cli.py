"""`harness compare`, `harness export`, and ids checked before anything runs, through the CLI
on real runs (real Redis, real worker processes, the embedded store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.cli import main
from harness.config import Settings
from harness.pipeline import run
from harness.store import open_store

REPEATS = 5  # 4 a side is the least that can reach p < 0.05; one more for margin


def invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env)


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {"REDIS_URL": settings.redis_address, "HARNESS_DATA_DIR": str(settings.data_dir),
            "HARNESS_REPORTS_DIR": str(tmp_path / "reports"), "MONGO_URI": ""}


@pytest.fixture
def three_sweeps(settings: Settings) -> dict[str, str]:
    """Sweeps "base" and "same" (2,000 orders, 0.5 ms of work per order) and "slow" (the same
    with 1.5 ms), 5 runs each, interleaved so that a slow minute of the machine lands on all
    three alike. Work that sleeps makes the runs' times steady on a busy machine."""
    shape = {"base": 0.5, "same": 0.5, "slow": 1.5}
    for repeat in range(REPEATS):
        for sweep_id, work_ms in shape.items():
            record = run(settings.replace(sweep_id=sweep_id, work_ms=work_ms, seed=repeat + 1))
            assert record.is_done, record.error
    return {name: name for name in shape}


def test_compare_flags_added_work_as_slower_and_identical_sweeps_as_nothing(
    three_sweeps: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    slower = invoke(["compare", "base", "slow", "--fail-on-regression"], env)
    print(slower.output)  # the table, for the record
    assert slower.exit_code == 1, slower.output
    assert "1 slower, 0 faster, 0 unchanged, 0 inconclusive of 1 matched point(s)" in slower.output
    assert "1 point(s) significantly slower" in slower.output
    doc = json.loads(invoke(["compare", "base", "slow", "--json"], env).output)
    [point] = doc["points"]
    assert point["flag"] == "slower" and point["pValue"] < 0.05 and point["ratio"] < 1 / 1.1
    assert point["baseline"]["n"] == point["candidate"]["n"] == REPEATS
    # The work per order is what changed: said so, and the points matched on the rest.
    assert doc["changedSettings"] == [{"name": "workMs", "baseline": 0.5, "candidate": 1.5}]
    assert "workMs" not in point["point"] and doc["onlyBaseline"] == doc["onlyCandidate"] == []
    assert "changed between the two (points matched on everything else): work ms 0.5 -> 1.5" \
        in slower.output

    same = invoke(["compare", "base", "same", "--fail-on-regression"], env)
    print(same.output)
    assert same.exit_code == 0, same.output
    assert "0 slower, 0 faster, 1 unchanged, 0 inconclusive of 1 matched point(s)" in same.output

    # The baseline as an exported file, as from another machine.
    exported = tmp_path / "base.json"
    result = invoke(["export", "--sweep", "base", "-o", str(exported)], env)
    assert result.exit_code == 0 and f"exported {REPEATS} runs of base" in result.output
    doc = json.loads(exported.read_text())
    assert doc["format"] == "harness-results" and doc["version"] == 1 and doc["sweeps"] == ["base"]
    assert doc["environment"]["cpuModel"] is not None and doc["environment"]["memoryTotalMb"] > 0
    assert all(r["memory"]["method"] == "psutil" and r["timeline"] and r["latency"] for r in doc["runs"])
    from_file = invoke(["compare", str(exported), "slow", "--fail-on-regression"], env)
    assert from_file.exit_code == 1 and "1 slower" in from_file.output


# What an unknown id's line ends with when no recorded sweep is near it: the newest sweeps.
THERE = "; sweeps recorded: there (`harness sweeps` lists them)"


@pytest.mark.parametrize(("args", "message"), [
    (["report", "--sweep", "nosuch"], "--sweep nosuch: no runs are recorded for sweep 'nosuch'" + THERE),
    (["report", "--baseline", "nosuch"],
     "--baseline nosuch: no runs are recorded for sweep 'nosuch'" + THERE),
    (["report", "--baseline", "missing.json"], "--baseline missing.json: no such file"),
    (["compare", "nosuch", "other"], "BASELINE nosuch: no runs are recorded for sweep 'nosuch'" + THERE),
    (["export", "--sweep", "nosuch", "-o", "x.json"],
     "--sweep nosuch: no runs are recorded for sweep 'nosuch'" + THERE),
    (["sweep", "-n", "1000", "-r", "1", "--baseline", "nosuch"],
     "--baseline nosuch: no runs are recorded for sweep 'nosuch'" + THERE),
])
def test_an_unknown_id_is_one_line_exit_2_before_anything_runs(
    settings: Settings, env: dict[str, str], args: list[str], message: str
) -> None:
    # One run exists, so "nothing recorded at all" is not what is being said.
    run(settings.replace(quantity=500, sweep_id="there"))
    result = invoke(args, env)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"harness: error: {message}"
    store = open_store(settings)
    try:
        assert len(store.list_runs()) == 1  # the sweep ran no point
    finally:
        store.close()
    assert not Path(env["HARNESS_REPORTS_DIR"]).exists()


@pytest.mark.parametrize("args", [["report"], ["export", "-o", "x.json"]])
def test_no_runs_at_all_is_one_line_exit_1(env: dict[str, str], args: list[str]) -> None:
    result = invoke(args, env)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == ("harness: error: no runs are recorded yet: `harness run` or "
                                     "`harness sweep` first")


def test_an_unknown_id_names_the_nearest_sweeps_or_says_it_is_a_run(
    settings: Settings, env: dict[str, str]
) -> None:
    ids = ["sweep-3x3-200k", "sweep-3x3-100k", "sweep-2x2-20k", "nightly"]
    records = [run(settings.replace(quantity=300, sweep_id=sweep_id)) for sweep_id in ids]
    lone = run(settings.replace(quantity=300))
    for args, flag in ((["compare", "sweep-3x3-300k", "nightly"], "BASELINE"),
                       (["report", "--sweep", "sweep-3x3-300k"], "--sweep"),
                       (["export", "--sweep", "sweep-3x3-300k", "-o", "x.json"], "--sweep")):
        result = invoke(args, env)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == (
            f"harness: error: {flag} sweep-3x3-300k: no runs are recorded for sweep "
            "'sweep-3x3-300k'; nearest: sweep-3x3-200k, sweep-3x3-100k, sweep-2x2-20k")
    # A run's id given for a sweep's: said so, with its sweep
    result = invoke(["compare", "nightly", records[1].run_id], env)
    assert result.exit_code == 2
    assert result.output.strip().endswith(
        f"'{records[1].run_id}' is a run, of sweep 'sweep-3x3-100k' (`harness sweeps` lists the sweeps)")
    result = invoke(["compare", "nightly", lone.run_id], env)
    assert result.output.strip().endswith(f"'{lone.run_id}' is a run, in no sweep "
                                          "(`harness sweeps` lists the sweeps)")


def test_sweeps_lists_every_sweep_newest_first_with_its_best_point(
    settings: Settings, env: dict[str, str]
) -> None:
    assert invoke(["sweeps"], env).output.strip() == "no sweeps recorded yet: `harness sweep` first"
    for sweep_id, levels in (("older", (1,)), ("newer", (1, 2))):
        for workers in levels:
            assert run(settings.replace(quantity=300, concurrency=workers, sweep_id=sweep_id)).is_done
    run(settings.replace(quantity=300))  # in no sweep: not listed
    result = invoke(["sweeps"], env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["sweep", "started", "(UTC)", "points", "runs", "failed", "best",
                                "point", "(median)"]
    assert [line.split()[0] for line in lines[1:]] == ["newer", "older"]
    assert lines[1].split()[3:6] == ["2", "2", "0"] and " workers " in lines[1]
    assert "its one point: " in lines[2] and lines[2].endswith(" orders/s")
    doc = json.loads(invoke(["sweeps", "--json"], env).output)
    assert [d["sweepId"] for d in doc] == ["newer", "older"] and doc[0]["points"] == 2
    # `harness runs` shows each run's sweep
    table = invoke(["runs"], env).output.splitlines()
    assert table[0].split()[:3] == ["runId", "sweepId", "phase"]
    assert sorted(line.split()[1] for line in table[1:] if line.split()[1] != "DONE") == \
        ["newer", "newer", "older"]
