"""Which configuration wins, and how sure: a sweep's points ranked by median throughput.

Every front end that shows a sweep (``harness sweep``'s closing table, the report's first
lines, the notebooks) shows :func:`rank`'s answer, so they never disagree.

* **Rank**: points by the median of their measured runs' orders/s (warm-ups and failed runs
  apart, as :mod:`harness.compare` counts them), best first.
* **Confidence interval of each median**: the exact distribution-free interval from order
  statistics, ``[x(k), x(n-k+1)]`` of the sorted runs, whose coverage is
  ``1 - 2 P(B <= k-1)`` for ``B ~ Binomial(n, 1/2)`` (no assumption about the shape of the
  runs' distribution; a bootstrap of 3 runs would only resample 3 numbers). The widest ``k``
  reaching the requested level is taken; with fewer than 6 runs no interval reaches 95 %,
  and the widest one, ``[min, max]``, is given with the coverage it has (75 % for 3 runs),
  said beside it rather than dressed up as 95 %.
* **Separable**: a two-sided Mann-Whitney U test of the best point's runs against the next
  one's at the sweep's ``alpha``. When ``n`` a side cannot reach it at all (2 / C(2n, n) >=
  alpha: 3 a side give 0.10) the verdict is *inconclusive* and names the repeats needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness import numbers
from harness.compare import (
    ALPHA,
    METRIC,
    Point,
    PointSummary,
    Stats,
    mann_whitney,
    min_p_value,
    repeats_needed,
    summarize,
)
from harness.extras import require
from harness.record import RunRecord

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a median and the coverage it really has."""

    low: float | None
    high: float | None
    coverage: float | None  # None: no runs

    def text(self, wanted: float = CONFIDENCE) -> str:
        if self.low is None or self.high is None or self.coverage is None:
            return numbers.DASH
        if self.coverage == 0:  # one run: an interval of one value covers nothing
            return f"{numbers.DASH} (one run)"
        span = f"[{numbers.count(self.low)} \N{EN DASH} {numbers.count(self.high)}]"
        return span if self.coverage >= wanted else f"{span} ({self.coverage:.0%} only)"


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The exact order-statistic interval of the median of ``values`` (see module doc)."""
    data = sorted(values)
    n = len(data)
    if n == 0:
        return Interval(None, None, None)
    binom = require("scipy.stats").binom
    best_k = 1  # [min, max]: the widest there is
    for k in range(1, n // 2 + 1):
        if 1 - 2 * float(binom.cdf(k - 1, n, 0.5)) >= confidence:
            best_k = k  # a larger k is a narrower interval still at the level
        else:
            break
    coverage = 1 - 2 * float(binom.cdf(best_k - 1, n, 0.5))
    return Interval(data[best_k - 1], data[n - best_k], coverage)


@dataclass(frozen=True)
class Ranked:
    """One point's place: its statistics, the interval of its median, and its median
    against the best's (1.0 for the best)."""

    place: int
    point: Point
    stats: Stats
    interval: Interval
    vs_best: float | None
    failed: int


@dataclass(frozen=True)
class Ranking:
    """A sweep's points, best first, and whether the best is told apart from the next."""

    points: list[Ranked]
    alpha: float
    columns: list[str]  # the settings that differ between points: what a label shows
    p_value: float | None = None  # best against the next
    min_p: float | None = None  # the smallest p their run counts allow

    @property
    def best(self) -> Ranked | None:
        return self.points[0] if self.points and self.points[0].stats.n else None

    @property
    def runner_up(self) -> Ranked | None:
        return self.points[1] if len(self.points) > 1 and self.points[1].stats.n else None

    @property
    def verdict(self) -> str:
        """``separable``, ``not separable``, ``inconclusive``, ``only one point`` or
        ``no runs``."""
        if self.best is None:
            return "no runs"
        if self.runner_up is None:
            return "only one point"
        if self.min_p is not None and self.min_p >= self.alpha:
            return "inconclusive"
        return "separable" if self.p_value is not None and self.p_value < self.alpha else "not separable"

    def headline(self) -> str:
        """``fastest: chunk 5,000 · workers 2, 102,250 orders/s [98,900 - 104,100], 1.05x the
        next, p = 0.03`` and what that p means at the sweep's alpha."""
        best, nxt = self.best, self.runner_up
        if best is None:
            return "no measured runs: nothing to rank"
        label = best.point.label(self.columns or None)
        interval = f" {best.interval.text()}" if best.stats.n > 1 else ""  # one run: none
        head = (f"fastest: {label}, {numbers.rate(best.stats.median)}{interval} "
                f"(median of {best.stats.n})")
        if nxt is None:
            return head + "; the only point"
        ratio = best.stats.median / nxt.stats.median if best.stats.median and nxt.stats.median else None
        head += f", {numbers.ratio(ratio)} the next ({nxt.point.label(self.columns or None)})"
        if self.verdict == "inconclusive":
            need = repeats_needed(self.alpha)
            return (head + f"; inconclusive: with {best.stats.n} and {nxt.stats.n} runs the smallest "
                    f"possible p is {numbers.sig(self.min_p, 2)}, not below alpha {self.alpha:g}; "
                    f"{need} runs a side are needed")
        assert self.p_value is not None
        if self.verdict == "separable":
            return head + f", {numbers.p_value(self.p_value)}: told apart at alpha {self.alpha:g}"
        return head + f", {numbers.p_value(self.p_value)}: not told apart at alpha {self.alpha:g}"

    def table(self) -> list[dict[str, str]]:
        """Rows for a terminal or HTML table: place, point, n, median, CI, CV, vs best."""
        return [{
            "#": str(r.place), "point": r.point.label(self.columns or None), "n": str(r.stats.n),
            "median orders/s": numbers.count(r.stats.median), "95% CI": r.interval.text(),
            "CV": numbers.percent(r.stats.cv), "vs best": numbers.ratio(r.vs_best),
            **({"failed": str(r.failed)} if any(x.failed for x in self.points) else {}),
        } for r in self.points]

    def text(self) -> str:
        """The table and the headline, as `harness sweep` ends."""
        rows = self.table()
        if not rows:
            return self.headline()
        header = list(rows[0])
        widths = [max(len(h), *(len(row[h]) for row in rows)) for h in header]

        def line(cells: dict[str, str]) -> str:
            return "  ".join(cells[h].ljust(w) if h == "point" else cells[h].rjust(w)
                             for h, w in zip(header, widths, strict=True))

        lines = [line({h: h for h in header}), *(line(row) for row in rows)]
        return "\n".join([*lines, "", self.headline()])


def rank(records: Iterable[RunRecord], alpha: float = ALPHA, metric: str = METRIC) -> Ranking:
    """``records``' points ranked by median ``metric`` (see the module docstring)."""
    from harness.compare import varying

    summaries: list[PointSummary] = summarize(records, metric)
    ordered = sorted(summaries, key=lambda s: (s.stats.median is None, -(s.stats.median or 0.0)))
    best_median = ordered[0].stats.median if ordered else None
    ranked = [Ranked(i + 1, s.point, s.stats, median_interval(s.stats.values),
                     s.stats.median / best_median if best_median and s.stats.median is not None else None,
                     len(s.failed))
              for i, s in enumerate(ordered)]
    columns = varying(s.point for s in summaries)
    p_value = min_p = None
    if len(ranked) > 1 and ranked[0].stats.n and ranked[1].stats.n:
        p_value = mann_whitney(ranked[0].stats.values, ranked[1].stats.values)
        min_p = min_p_value(ranked[0].stats.n, ranked[1].stats.n)
    return Ranking(ranked, alpha, columns, p_value, min_p)


__all__ = ["Interval", "Ranked", "Ranking", "median_interval", "rank", "repeats_needed"]
