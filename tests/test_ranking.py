"""Which configuration wins and how sure: ranking on records with known figures, the exact
interval of a median, and the one number formatter (a table of cases)."""

from __future__ import annotations

import math

import pytest
from scipy import stats
from test_compare import record

from harness import numbers, ranking


def sweep(rates: dict[int, list[float]]) -> list:
    """Runs of points that differ in concurrency, with the given orders/s each."""
    return [record(rate, i, concurrency=c) for c, values in rates.items() for i, rate in enumerate(values)]


def test_a_clear_winner_is_ranked_first_and_told_apart() -> None:
    runs = sweep({1: [50_000, 51_000, 49_500, 50_500, 50_200],
                  2: [80_000, 81_000, 79_000, 80_500, 80_200],
                  4: [60_000, 61_000, 59_000, 60_500, 60_200]})
    r = ranking.rank(runs)
    assert [x.point.get("concurrency") for x in r.points] == [2, 4, 1]
    assert r.best is not None and r.best.stats.median == 80_200 and r.best.vs_best == 1.0
    assert r.points[1].vs_best == pytest.approx(60_200 / 80_200)
    assert r.verdict == "separable" and r.p_value is not None and r.p_value < 0.05
    head = r.headline()
    assert head.startswith("fastest: workers 2, 80,200 orders/s [")
    assert "1.33\N{MULTIPLICATION SIGN} the next (workers 4)" in head and "told apart at alpha 0.05" in head


def test_a_tie_is_not_separable() -> None:
    runs = sweep({1: [50_000, 51_000, 49_000, 50_500, 49_500],
                  2: [50_100, 50_900, 49_100, 50_400, 49_600]})
    r = ranking.rank(runs)
    assert r.verdict == "not separable"
    assert r.p_value is not None and r.p_value >= 0.05
    assert "not told apart at alpha 0.05" in r.headline()


def test_too_few_repeats_are_inconclusive_and_name_the_repeats_needed() -> None:
    runs = sweep({1: [50_000, 51_000], 2: [80_000, 81_000]})
    r = ranking.rank(runs)
    assert r.verdict == "inconclusive"
    assert r.min_p == pytest.approx(2 / math.comb(4, 2))
    assert "4 runs a side are needed" in r.headline()
    assert ranking.repeats_needed(0.05) == 4 and ranking.repeats_needed(0.10) == 4
    assert ranking.repeats_needed(0.2) == 3


def test_failed_runs_and_warmups_do_not_count() -> None:
    runs = sweep({1: [50_000, 51_000, 50_500], 2: [40_000, 41_000, 40_500]})
    runs.append(record(999_999, 9, phase="ERROR", concurrency=2))
    runs.append(record(999_999, 10, concurrency=2, warmup=True))
    r = ranking.rank(runs)
    assert r.best is not None and r.best.point.get("concurrency") == 1
    assert r.points[1].failed == 1 and r.points[1].stats.n == 3
    assert "failed" in r.table()[0]


@pytest.mark.parametrize("n", [6, 7, 10, 15, 30])
def test_the_median_interval_is_scipys_exact_one_where_95_percent_is_reachable(n: int) -> None:
    values = [float(v) for v in range(1, n + 1)]
    mine = ranking.median_interval(values)
    theirs = stats.quantile_test(values, q=float(stats.scoreatpercentile(values, 50)),
                                 p=0.5).confidence_interval(0.95)
    assert (mine.low, mine.high) == (theirs.low, theirs.high)
    assert mine.coverage is not None and mine.coverage >= 0.95


@pytest.mark.parametrize(("n", "coverage"), [(2, 0.5), (3, 0.75), (5, 0.9375)])
def test_below_six_runs_the_interval_is_min_to_max_with_the_coverage_it_has(n: int, coverage: float) -> None:
    interval = ranking.median_interval([float(v) for v in range(n)])
    assert (interval.low, interval.high) == (0.0, float(n - 1))
    assert interval.coverage == pytest.approx(coverage)
    assert interval.text().endswith(f"({coverage:.0%} only)")


def test_one_run_has_no_interval() -> None:
    interval = ranking.median_interval([5.0])
    assert interval.coverage == 0.0 and interval.text() == "\N{EM DASH} (one run)"


def test_a_sweep_table_has_every_point_and_the_headline() -> None:
    text = ranking.rank(sweep({1: [50_000, 51_000, 50_500], 2: [80_000, 81_000, 80_500]})).text()
    lines = text.splitlines()
    assert lines[0].split() == ["#", "point", "n", "median", "orders/s", "95%", "CI", "CV", "vs", "best"]
    assert lines[1].lstrip().startswith("1  workers 2") and "80,500" in lines[1]
    assert lines[-1].startswith("fastest: workers 2")


@pytest.mark.parametrize(("call", "expected"), [
    (lambda: numbers.duration(0.4), "0.4 ms"),
    (lambda: numbers.duration(175.925), "176 ms"),
    (lambda: numbers.duration(999.4), "999 ms"),
    (lambda: numbers.duration(16_412.0), "16.4 s"),
    (lambda: numbers.duration(123_456.0), "123 s"),
    (lambda: numbers.duration(None), "\N{EM DASH}"),
    (lambda: numbers.latency(1216.0), "1,220 ms"),
    (lambda: numbers.latency(1363.722), "1,360 ms"),
    (lambda: numbers.latency(12.88), "12.9 ms"),
    (lambda: numbers.latency(0.002), "0.002 ms"),
    (lambda: numbers.latency(0.0), "0 ms"),
    (lambda: numbers.count(20_000), "20,000"),
    (lambda: numbers.count(1_000_000.0), "1,000,000"),
    (lambda: numbers.rate(36_071.4), "36,071 orders/s"),
    (lambda: numbers.rate(491_214.0, window_ms=10.2), "\N{EM DASH}"),  # 5,000 orders in 10 ms
    (lambda: numbers.rate(491_214.0, window_ms=50.0), "491,214 orders/s"),
    (lambda: numbers.rate(float("nan")), "\N{EM DASH}"),
    (lambda: numbers.ratio(1.0534), "1.05\N{MULTIPLICATION SIGN}"),
    (lambda: numbers.p_value(0.0312), "p = 0.031"),
    (lambda: numbers.p_value(0.0004), "p < 0.001"),
    (lambda: numbers.percent(0.052), "5.2 %"),
    (lambda: numbers.sig(0.11291899999999999), "0.113"),
    (lambda: numbers.sig(float("inf")), "\N{EM DASH}"),
])
def test_the_number_formatter(call, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert call() == expected
