"""Like compared with like: parameter points, their statistics, and comparisons that say
when a change is real.

**Points.** Runs are grouped on every setting that shapes a run (the sweepable settings of
:mod:`harness.config` but the seed, which a sweep varies per repeat) plus the backend:
pooling a 5,000-order run at 1,000 orders per job with one at 100 per job gave one median
of two unlike numbers (8,444.7 and 20,605.8 orders/s: "median 14525.25, runs 2").

**Statistics.** Per point: median, quartiles (IQR), n and the coefficient of variation of
the DONE runs that are not warm-ups.

**Comparisons** (as asv does): per matched point, baseline and candidate medians, their
ratio and a two-sided Mann-Whitney U test; a point is flagged "faster" or "slower" only
when the ratio is beyond ``factor`` *and* p < ``alpha``. With few repeats no test can be
significant: the smallest two-sided p a Mann-Whitney test can give is 2 / C(n1 + n2, n1),
0.10 with 3 runs a side (so 4 a side are needed for alpha 0.05), and the output says so.
Points on one side only are listed, and so is how the two environments differ.

Plain Python and scipy (for the test), no pandas: the CLI, report.ipynb and the tests all
use this module.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness import parsing
from harness.codec import camel, to_json
from harness.config import SWEEPABLE
from harness.extras import require
from harness.record import Environment, RunRecord

# The settings that make a point (every sweepable one but the seed), and the backend.
POINT_SETTINGS = tuple(name for name in SWEEPABLE if name != "seed")
POINT_COLUMNS = (*(camel(name) for name in POINT_SETTINGS), "backend")
# How a point's settings read in labels.
SHORT = {"quantity": "N", "chunkSize": "chunk", "normalBatchSize": "normal batch",
         "ordersPerJob": "per job", "concurrency": "workers", "tierMix": "tiers",
         "workMs": "work ms", "backend": "store"}
METRIC = "overallPerSec"  # orders/s from generation to DONE: higher is better
FACTOR = 1.1
ALPHA = 0.05
CV_LIMIT = 0.05  # repeats whose coefficient of variation is above this are flagged


@dataclass(frozen=True, order=True)
class Point:
    """One parameter point: (column, value) for each of :data:`POINT_COLUMNS`."""

    values: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Point:
        """The point of a flat row (:meth:`RunRecord.row`) or any mapping of those columns."""
        return cls(tuple((c, _plain(row.get(c))) for c in POINT_COLUMNS))

    def get(self, column: str) -> Any:
        return dict(self.values).get(column)

    def label(self, columns: Sequence[str] | None = None) -> str:
        """E.g. ``chunk 5,000 · workers 2``; ``columns``: which to show (default all)."""
        shown = [(c, v) for c, v in self.values if columns is None or c in columns]
        return " · ".join(f"{SHORT.get(c, c)} {_fmt(v)}" for c, v in shown) or "all runs"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def without(self, columns: Iterable[str]) -> Point:
        drop = set(columns)
        return Point(tuple((c, v) for c, v in self.values if c not in drop))


def _plain(value: Any) -> Any:
    """Values that compare and hash alike whatever table they came from: 0 and 0.0 and
    numpy numbers are one value; NaN (pandas' missing) is None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) or type(value).__module__ == "numpy":
        number = float(value)
        if math.isnan(number):
            return None
        return int(number) if number.is_integer() else number
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3g}"
    return str(value)


def varying(points: Iterable[Point]) -> list[str]:
    """The columns whose value differs between ``points``: what their labels need."""
    points = list(points)
    return [c for c in POINT_COLUMNS if len({p.get(c) for p in points}) > 1]


def measured(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The runs statistics are made of: DONE, and not a warm-up."""
    return [r for r in records if r.is_done and not r.param("warmup")]


def by_point(records: Iterable[RunRecord]) -> dict[Point, list[RunRecord]]:
    """Runs grouped by point, points in their natural order, runs oldest first."""
    groups: dict[Point, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(Point.of(record.row()), []).append(record)
    for runs in groups.values():
        runs.sort(key=lambda r: r.started_at or "")
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def _sort_key(point: Point) -> tuple[Any, ...]:
    return tuple((v is None, str(type(v)), v if v is not None else 0) for _, v in point.values)


def metric_of(record: RunRecord, metric: str = METRIC) -> float | None:
    value = record.row().get(metric)
    return None if value is None else float(value)


# -- statistics ------------------------------------------------------------------------------

def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's and pandas' default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class Stats:
    """One point's values of the metric over its measured runs."""

    n: int
    median: float | None = None
    q25: float | None = None
    q75: float | None = None
    mean: float | None = None
    cv: float | None = None  # sample standard deviation / mean; None below 2 runs
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        data = sorted(v for v in values if v is not None and not math.isnan(v))
        if not data:
            return cls(0)
        mean = statistics.fmean(data)
        cv = statistics.stdev(data) / mean if len(data) > 1 and mean else None
        return cls(len(data), statistics.median(data), quantile(data, 0.25), quantile(data, 0.75),
                   mean, cv, data)

    @property
    def iqr(self) -> float | None:
        return None if self.q25 is None or self.q75 is None else self.q75 - self.q25

    @property
    def noisy(self) -> bool:
        return self.cv is not None and self.cv > CV_LIMIT


@dataclass
class PointSummary:
    """A point of one set of runs: its statistics, its runs (warm-ups apart) and failures."""

    point: Point
    stats: Stats
    runs: list[RunRecord]
    warmups: list[RunRecord]
    failed: list[RunRecord]


def summarize(records: Iterable[RunRecord], metric: str = METRIC) -> list[PointSummary]:
    """Every point of ``records`` with the statistics of its measured runs."""
    out = []
    for point, runs in by_point(records).items():
        good = measured(runs)
        out.append(PointSummary(point, Stats.of(v for r in good if (v := metric_of(r, metric)) is not None),
                                good, [r for r in runs if r.param("warmup")],
                                [r for r in runs if not r.is_done]))
    return out


def min_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p-value a Mann-Whitney U test can give with n1 and n2 values
    (all of one side below all of the other): 2 / C(n1 + n2, n1)."""
    if n1 < 1 or n2 < 1:  # nothing to test
        return 1.0
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def repeats_needed(alpha: float) -> int:
    """The fewest runs a side with which a two-sided Mann-Whitney test can reach ``alpha``
    (4 for 0.05 and 0.10: 3 a side give at best p = 0.10)."""
    n = 1
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value (scipy); None when a side is empty. All values
    equal on both sides is no evidence of a difference: p = 1."""
    if not a or not b:
        return None
    stats = require("scipy.stats")
    if len(set(a) | set(b)) == 1:
        return 1.0
    p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


# -- comparisons -----------------------------------------------------------------------------

@dataclass
class PointComparison:
    point: Point
    baseline: Stats
    candidate: Stats
    ratio: float | None  # candidate median / baseline median (> 1: faster)
    p_value: float | None
    min_p: float
    flag: str  # "faster", "slower" or ""
    note: str = ""


@dataclass
class EnvDifference:
    name: str
    baseline: Any
    candidate: Any

    @property
    def differs(self) -> bool:
        return self.baseline != self.candidate


@dataclass
class Comparison:
    """A candidate's points against a baseline's, with the test's settings."""

    baseline: str
    candidate: str
    factor: float
    alpha: float
    metric: str
    points: list[PointComparison]
    only_baseline: list[Point]
    only_candidate: list[Point]
    environment: list[EnvDifference]
    # Settings with one value on each side, a different one: what the comparison measures
    # (e.g. --work-ms added); points are matched on the other settings.
    changed: list[EnvDifference] = field(default_factory=list)

    @property
    def regressions(self) -> list[PointComparison]:
        return [p for p in self.points if p.flag == "slower"]

    @property
    def improvements(self) -> list[PointComparison]:
        return [p for p in self.points if p.flag == "faster"]

    @property
    def underpowered(self) -> list[PointComparison]:
        """Points whose repeats are too few for any test to reach ``alpha``: inconclusive."""
        return [p for p in self.points if p.flag == "inconclusive"]

    def columns(self) -> list[str]:
        """The point columns worth showing: those that vary, or all when none does."""
        points = [p.point for p in self.points] + self.only_baseline + self.only_candidate
        if not points:
            return []
        return varying(points) or [c for c, _ in points[0].values]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per matched point, for a table."""
        cols = self.columns()
        return [{
            **{c: p.point.get(c) for c in cols},
            "baseline median": p.baseline.median, "baseline IQR": p.baseline.iqr,
            "baseline n": p.baseline.n, "candidate median": p.candidate.median,
            "candidate IQR": p.candidate.iqr, "candidate n": p.candidate.n,
            "ratio": None if p.ratio is None else round(p.ratio, 3),
            "p": None if p.p_value is None else round(p.p_value, 4),
            "flag": p.flag, "note": p.note,
        } for p in self.points]

    def verdict(self) -> str:
        """One line: what changed, significantly, and what the runs were too few to tell."""
        slower, faster, unsure = len(self.regressions), len(self.improvements), len(self.underpowered)
        line = (f"{slower} slower, {faster} faster, {len(self.points) - slower - faster - unsure} "
                f"unchanged, {unsure} inconclusive of {len(self.points)} matched point(s) "
                f"(flagged: ratio beyond {self.factor:g}x and Mann-Whitney p < {self.alpha:g})")
        if unsure:
            sides = sorted({(p.baseline.n, p.candidate.n) for p in self.underpowered})
            runs = ", ".join(f"{a} vs {b}" for a, b in sides)
            line += (f"; inconclusive: with {runs} run(s) no test can reach p < {self.alpha:g}; "
                     f"{repeats_needed(self.alpha)} runs a side are needed")
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline, "candidate": self.candidate, "factor": self.factor,
            "alpha": self.alpha, "metric": self.metric, "verdict": self.verdict(),
            "points": [{"point": p.point.as_dict(), "baseline": _stats_json(p.baseline),
                        "candidate": _stats_json(p.candidate), "ratio": p.ratio,
                        "pValue": p.p_value, "minPValue": p.min_p, "flag": p.flag,
                        "note": p.note} for p in self.points],
            "onlyBaseline": [p.as_dict() for p in self.only_baseline],
            "onlyCandidate": [p.as_dict() for p in self.only_candidate],
            "environment": [{"name": d.name, "baseline": d.baseline, "candidate": d.candidate,
                             "differs": d.differs} for d in self.environment],
            "changedSettings": [{"name": d.name, "baseline": d.baseline, "candidate": d.candidate}
                                for d in self.changed],
        }


def _stats_json(s: Stats) -> dict[str, Any]:
    return {"n": s.n, "median": s.median, "q25": s.q25, "q75": s.q75, "cv": s.cv,
            "values": s.values}


def compare(
    baseline: Sequence[RunRecord], candidate: Sequence[RunRecord], factor: float = FACTOR,
    alpha: float = ALPHA, baseline_label: str = "baseline", candidate_label: str = "candidate",
    baseline_env: Environment | None = None, candidate_env: Environment | None = None,
    metric: str = METRIC,
) -> Comparison:
    """Every point both sides measured, compared; points on one side only listed.

    A setting with one value throughout each side but different values on the two sides
    (``--work-ms`` added, another backend) is what the comparison is about: it is reported
    as changed (:attr:`Comparison.changed`) and points are matched on the other settings.
    Any setting that varies within a side stays part of the point."""
    parsing.FACTOR.check(factor)  # as --factor and --alpha read them: report.ipynb's
    parsing.ALPHA.check(alpha)  # parameters reach here (None, NaN, 0 are refused)
    changed = changed_settings(summarize(baseline, metric), summarize(candidate, metric))
    drop = [d.name for d in changed]
    base = {s.point.without(drop): s for s in summarize(baseline, metric) if s.stats.n}
    cand = {s.point.without(drop): s for s in summarize(candidate, metric) if s.stats.n}
    points = []
    for point in sorted(base.keys() & cand.keys(), key=_sort_key):
        b, c = base[point].stats, cand[point].stats
        ratio = c.median / b.median if b.median and c.median is not None else None
        p_value = mann_whitney(b.values, c.values)
        min_p = min_p_value(b.n, c.n)
        flag, note = "", ""
        beyond = ratio is not None and (ratio >= factor or ratio <= 1 / factor)
        significant = p_value is not None and p_value < alpha
        if min_p >= alpha:  # no outcome of these runs could be significant: say so, never "unchanged"
            flag = "inconclusive"
            note = (f"n = {b.n} vs {c.n} cannot reach p < {alpha:g} (smallest possible p "
                    f"{min_p:.3g}): {repeats_needed(alpha)} runs a side are needed"
                    + (f"; ratio beyond {factor:g}x" if beyond else ""))
        elif beyond and significant:
            flag = "faster" if ratio is not None and ratio > 1 else "slower"
        elif beyond:
            note = f"beyond {factor:g}x, not significant (p = {p_value:.3g})"
        elif significant:
            note = f"significant (p = {p_value:.3g}) but within {factor:g}x"
        points.append(PointComparison(point, b, c, ratio, p_value, min_p, flag, note))
    return Comparison(
        baseline_label, candidate_label, factor, alpha, metric, points,
        sorted(base.keys() - cand.keys(), key=_sort_key),
        sorted(cand.keys() - base.keys(), key=_sort_key),
        environment_diff(baseline_env, candidate_env), changed,
    )


def changed_settings(baseline: Sequence[PointSummary],
                     candidate: Sequence[PointSummary]) -> list[EnvDifference]:
    """Point settings with a single value on each side, different between the sides."""
    out = []
    for column in POINT_COLUMNS:
        a = {s.point.get(column) for s in baseline if s.stats.n}
        b = {s.point.get(column) for s in candidate if s.stats.n}
        if len(a) == 1 and len(b) == 1 and a != b:
            out.append(EnvDifference(column, a.pop(), b.pop()))
    return out


# -- environments ----------------------------------------------------------------------------

# What a performance engineer checks first when two machines' numbers differ.
ENV_FIELDS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("CPU model", lambda e: e.get("cpuModel")),
    ("physical cores", lambda e: e.get("cpuCores")),
    ("logical CPUs", lambda e: e.get("cpuCount")),
    ("RAM (MB)", lambda e: e.get("memoryTotalMb")),
    ("OS", lambda e: e.get("os")),
    ("platform", lambda e: e.get("platform")),
    ("Python", lambda e: e.get("python")),
    ("git revision", lambda e: e.get("gitRevision")),
    ("git dirty", lambda e: e.get("gitDirty")),
    ("backend", lambda e: (e.get("store") or {}).get("backend")),
    ("backend version", lambda e: (e.get("store") or {}).get("version")),
    ("Redis", lambda e: (e.get("redis") or {}).get("version")),
)


def environment_diff(a: Environment | None, b: Environment | None) -> list[EnvDifference]:
    """Each machine and software fact of both sides (packages by name), differing or not."""
    ja: dict[str, Any] = to_json(a) if a else {}
    jb: dict[str, Any] = to_json(b) if b else {}
    out = [EnvDifference(name, get(ja), get(jb)) for name, get in ENV_FIELDS]
    packages = sorted(set(ja.get("packages") or {}) | set(jb.get("packages") or {}))
    out += [EnvDifference(f"package {p}", (ja.get("packages") or {}).get(p),
                          (jb.get("packages") or {}).get(p)) for p in packages]
    return out


def changed_line(comparison: Comparison) -> str | None:
    """What changed between the two sides, as `harness compare` and the report say it
    (``changed between the two (points matched on everything else): work ms 0.5 -> 1.5``);
    None when no setting changed throughout."""
    if not comparison.changed:
        return None
    return "changed between the two (points matched on everything else): " + ", ".join(
        f"{SHORT.get(d.name, d.name)} {_fmt(d.baseline)} -> {_fmt(d.candidate)}"
        for d in comparison.changed)


def format_text(comparison: Comparison) -> str:
    """The comparison as the plain text `harness compare` prints."""
    c = comparison
    cols = c.columns()
    header = [*(SHORT.get(col, col) for col in cols), "baseline", "IQR", "n", "candidate", "IQR",
              "n", "ratio", "p", "flag"]
    body = []
    for p in c.points:
        body.append([*(_fmt(p.point.get(col)) for col in cols),
                     _num(p.baseline.median), _num(p.baseline.iqr), str(p.baseline.n),
                     _num(p.candidate.median), _num(p.candidate.iqr), str(p.candidate.n),
                     "-" if p.ratio is None else f"{p.ratio:.3f}",
                     "-" if p.p_value is None else f"{p.p_value:.3g}",
                     p.flag or ("~" if p.note else "")])
    lines = [f"{c.candidate} against {c.baseline}: {c.metric} (orders/s, generation to DONE), "
             f"median of each point's runs"]
    if (changed := changed_line(c)) is not None:
        lines.append(changed)
    lines += [_table(header, body), "", c.verdict()]
    notes = [(p, p.note) for p in c.points if p.note]
    if notes:
        lines += ["", "~ notes:"] + [f"  {p.point.label(cols)}: {note}" for p, note in notes]
    for title, points in (("only in the baseline", c.only_baseline),
                          ("only in the candidate", c.only_candidate)):
        if points:
            lines += ["", f"{title} ({len(points)}):"] + [f"  {p.label()}" for p in points]
    differ = [d for d in c.environment if d.differs]
    lines += ["", f"environment: {len(differ)} of {len(c.environment)} facts differ"
              + (":" if differ else "")]
    lines += [f"  {d.name}: {d.baseline} -> {d.candidate}" for d in differ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [header, *rows])
