"""Like compared with like: parameter points, statistics and comparisons, on records built
with known figures (no runs needed), and the results file that carries them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from harness import charts, compare, results
from harness.errors import BadInput, NotFound
from harness.record import Environment, RunRecord, Throughput

POINT = {"quantity": 5_000, "chunk_size": 5_000, "orders_per_job": 1_000, "concurrency": 1,
         "normal_batch_size": 10_000, "tier_mix": "BRONZE=1,PRATA=1,OURO=1,DIAMANTE=1",
         "work_ms": 0.0}


def record(rate: float, i: int = 0, phase: str = "DONE", backend: str = "sqlite",
           env: Environment | None = None, **params: Any) -> RunRecord:
    """A run record with a known throughput, at POINT changed by ``params``."""
    return RunRecord(
        run_id=f"r{i}-{rate}-{sorted(params.items())}", phase=phase,
        parameters={**POINT, "seed": i + 1, **params},
        started_at=f"2026-11-30T10:{i // 60:02d}:{i % 60:02d}.000+00:00",
        throughput=Throughput(overall=rate),
        environment=env or Environment(store={"backend": backend}, cpu_model="CPU A"))


def test_runs_that_differ_in_any_setting_are_not_pooled() -> None:
    # The bug: `sweep -n 5000 --chunk-sizes 5000 -j 100,1000 -c 1 -r 1` gave 8,444.7 and
    # 20,605.8 orders/s, and the report showed one point, "median 14525.25, runs 2".
    runs = charts.table([record(8_444.7, 0, orders_per_job=100), record(20_605.8, 1)])
    stats = charts.throughput_by_concurrency(runs).set_index("ordersPerJob")
    assert len(stats) == 2 and list(stats["runs"]) == [1, 1]
    assert stats.loc[100, "median"] == 8_444.7 and stats.loc[1_000, "median"] == 20_605.8
    # "The latest runs" pooled 5k, 100k and 200k runs the same way; the store counts too.
    mixed = [record(1.0, 0, quantity=5_000), record(2.0, 1, quantity=100_000),
             record(3.0, 2, quantity=200_000), record(4.0, 3, quantity=200_000, backend="mongo")]
    stats = charts.throughput_by_point(charts.table(mixed))
    assert sorted(stats["median"]) == [1.0, 2.0, 3.0, 4.0] and set(stats["runs"]) == {1}
    # Point labels name what differs between the points shown, and only that.
    assert set(charts.table(mixed)["point"]) == {"N 5,000 · store sqlite", "N 100,000 · store sqlite",
                                                 "N 200,000 · store sqlite", "N 200,000 · store mongo"}


def test_a_point_is_every_sweepable_setting_but_the_seed_plus_the_backend() -> None:
    assert compare.POINT_COLUMNS == ("quantity", "chunkSize", "normalBatchSize", "ordersPerJob",
                                     "concurrency", "tierMix", "workMs", "backend")
    # Repeats differ in seed only: one point; a warm-up and a failed run are left out.
    runs = [record(10.0, 0), record(20.0, 1), record(30.0, 2), record(40.0, 3),
            record(1e6, 4, warmup=True), record(1e6, 5, phase="ERROR")]
    [summary] = compare.summarize(runs)
    assert summary.stats.n == 4 and summary.stats.median == 25.0
    assert (summary.stats.q25, summary.stats.q75) == (17.5, 32.5)  # pandas' and numpy's default
    assert summary.stats.cv == pytest.approx(12.909944 / 25, rel=1e-6)  # sample sd / mean
    assert summary.stats.noisy and len(summary.warmups) == 1 and len(summary.failed) == 1
    stats = charts.throughput_by_point(charts.table(runs))
    assert stats.loc[0, "median"] == 25.0 and stats.loc[0, "runs"] == 4


def test_a_significant_change_beyond_the_factor_is_flagged_either_way() -> None:
    base = [record(v, i) for i, v in enumerate([100, 102, 98, 101, 99])]
    slower = [record(v, i) for i, v in enumerate([60, 61, 59, 62, 58])]
    faster = [record(v, i) for i, v in enumerate([150, 151, 149, 152, 148])]
    [p] = compare.compare(base, slower).points
    assert p.flag == "slower" and p.ratio == pytest.approx(0.6)
    assert p.p_value is not None and p.p_value < 0.05 and p.min_p == pytest.approx(2 / 252)
    assert (p.baseline.median, p.baseline.n, p.candidate.median, p.candidate.n) == (100, 5, 60, 5)
    [p] = compare.compare(base, faster).points
    assert p.flag == "faster" and p.ratio == pytest.approx(1.5)
    comparison = compare.compare(base, slower)
    assert comparison.regressions and "1 slower, 0 faster, 0 unchanged" in comparison.verdict()


def test_a_change_within_the_factor_or_not_significant_is_not_flagged() -> None:
    base = [record(v, i) for i, v in enumerate([100, 102, 98, 101, 99])]
    # 5 % slower, and significant: within the factor of 1.1.
    [p] = compare.compare(base, [record(v * 0.95, i) for i, v in enumerate([100, 102, 98, 101, 99])]).points
    assert p.flag == "" and p.p_value is not None and p.p_value < 0.05 and "within 1.1x" in p.note
    # Same distribution: nothing at all, p = 1.
    [p] = compare.compare(base, list(base)).points
    assert p.flag == "" and p.note == "" and p.ratio == 1.0 and p.p_value == 1.0
    # Beyond the factor but overlapping runs: not significant.
    wide = [record(v, i) for i, v in enumerate([50, 160, 55, 150, 60])]
    [p] = compare.compare(base, wide).points
    assert p.flag == "" and "not significant" in p.note


def test_three_runs_a_side_cannot_be_significant_and_the_output_says_so() -> None:
    assert compare.min_p_value(3, 3) == pytest.approx(0.1)
    assert compare.min_p_value(4, 4) == pytest.approx(2 / 70) and 2 / 70 < 0.05
    assert compare.min_p_value(3, 4) == pytest.approx(2 / 35) and 2 / 35 > 0.05
    base = [record(v, i) for i, v in enumerate([100, 101, 99])]
    half = [record(v, i) for i, v in enumerate([50, 51, 49])]
    comparison = compare.compare(base, half)
    [p] = comparison.points
    assert p.flag == "inconclusive" and p.p_value == pytest.approx(0.1)  # the best a test can do
    assert "n = 3 vs 3 cannot reach p < 0.05" in p.note and "4 runs a side are needed" in p.note
    verdict = comparison.verdict()
    assert comparison.underpowered == [p] and "0 unchanged, 1 inconclusive of 1" in verdict
    assert "with 3 vs 3 run(s) no test can reach p < 0.05; 4 runs a side are needed" in verdict
    text = compare.format_text(comparison)
    assert "4 runs a side are needed" in text and "inconclusive" in text


def test_two_runs_a_side_at_ratio_0_6_are_inconclusive_not_unchanged() -> None:
    """The report that asked for this: ratio 0.616, p = 0.333, n = 2 a side, called unchanged."""
    comparison = compare.compare([record(v, i) for i, v in enumerate([100, 102])],
                                 [record(v, i) for i, v in enumerate([61, 63])])
    [p] = comparison.points
    assert p.flag == "inconclusive" and p.p_value == pytest.approx(1 / 3)
    assert "ratio beyond 1.1x" in p.note
    verdict = comparison.verdict()
    assert "0 unchanged, 1 inconclusive" in verdict and "with 2 vs 2 run(s)" in verdict
    assert "3 a side" not in verdict  # no hint about a sample size it does not have


def test_points_on_one_side_only_are_listed_and_environments_are_diffed() -> None:
    env_a = Environment(store={"backend": "sqlite", "version": "3.40"}, cpu_model="CPU A",
                        packages={"rq": "3.0.0", "redis": "8.1.0"}, git_revision="abc")
    env_b = Environment(store={"backend": "sqlite", "version": "3.40"}, cpu_model="CPU B",
                        packages={"rq": "3.0.1", "redis": "8.1.0"}, git_revision="abc")
    base = [record(100.0, i, env=env_a) for i in range(4)] + [record(5.0, 9, env=env_a, concurrency=4)]
    cand = [record(100.0, i, env=env_b) for i in range(4)] + [record(5.0, 9, env=env_b, concurrency=2)]
    comparison = compare.compare(base, cand, baseline_env=env_a, candidate_env=env_b)
    assert len(comparison.points) == 1
    assert [p.get("concurrency") for p in comparison.only_baseline] == [4]
    assert [p.get("concurrency") for p in comparison.only_candidate] == [2]
    differ = {d.name: (d.baseline, d.candidate) for d in comparison.environment if d.differs}
    assert differ == {"CPU model": ("CPU A", "CPU B"), "package rq": ("3.0.0", "3.0.1")}
    text = compare.format_text(comparison)
    assert "only in the baseline (1)" in text and "CPU model: CPU A -> CPU B" in text
    assert json.loads(json.dumps(comparison.to_json()))["onlyCandidate"][0]["concurrency"] == 2


def test_an_exported_file_reads_back_with_its_runs_and_environment(tmp_path: Path) -> None:
    env = Environment(cpu_model="CPU A", cpu_cores=2, memory_total_mb=24_000, git_revision="abc",
                      git_dirty=False, store={"backend": "sqlite"})
    runs = [record(100.0 + i, i, env=env, sweep_id="s1") for i in range(3)]
    doc = results.export(results.Results("s1", runs), ["s1"])
    assert doc["format"] == "harness-results" and doc["version"] == 1 and doc["exportedAt"]
    assert doc["environment"]["cpuModel"] == "CPU A" and len(doc["runs"]) == 3
    path = results.write(doc, tmp_path / "out" / "s1.json")
    back = results.read_file(path)
    assert [r.to_json() for r in back.runs] == [r.to_json() for r in runs]
    assert back.environment == env and back.label == "s1 (s1.json)"


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("not json", "not a harness results file"),
    (json.dumps({"runs": []}), 'no "format": "harness-results"'),
    (json.dumps({"format": "harness-results", "version": 99, "runs": []}), "version 99"),
    (json.dumps({"format": "harness-results", "version": 1, "runs": []}), "holds no runs"),
])
def test_a_bad_results_file_is_one_line_naming_it(tmp_path: Path, content: str | None,
                                                  message: str) -> None:
    path = tmp_path / "base.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((NotFound, BadInput)) as info:
        results.read_file(path, "--baseline")
    assert str(info.value).startswith(f"--baseline {path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_stats_of_nothing_and_of_one_run() -> None:
    assert compare.Stats.of([]).n == 0 and compare.Stats.of([]).median is None
    one = compare.Stats.of([5.0])
    assert (one.n, one.median, one.iqr, one.cv) == (1, 5.0, 0.0, None)
    assert math.isnan(compare.quantile([], 0.5))


def test_a_setting_changed_throughout_one_side_is_what_is_compared() -> None:
    # "slow" is "base" with --work-ms added: matched on the rest, the change named.
    base = [record(v, i, chunk_size=c) for i, v in enumerate([100, 101, 99, 100]) for c in (500, 1000)]
    slow = [record(v, i, chunk_size=c, work_ms=0.5) for i, v in enumerate([50, 51, 49, 50])
            for c in (500, 1000)]
    comparison = compare.compare(base, slow)
    assert [(d.name, d.baseline, d.candidate) for d in comparison.changed] == [("workMs", 0, 0.5)]
    assert [p.point.get("chunkSize") for p in comparison.points] == [500, 1000]
    assert all(p.flag == "slower" for p in comparison.points)
    # A setting that varies within a side stays part of the point: unmatched, and listed.
    mixed = compare.compare(base, [record(50.0, i, chunk_size=c) for i in range(4) for c in (500, 2000)])
    assert mixed.changed == [] and [p.point.get("chunkSize") for p in mixed.points] == [500]
    assert [p.get("chunkSize") for p in mixed.only_baseline] == [1000]
    assert [p.get("chunkSize") for p in mixed.only_candidate] == [2000]
