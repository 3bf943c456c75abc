"""/metrics values are rounded to what they measure (no float-arithmetic tails)."""

from __future__ import annotations

from typing import Any

from harness.api import metrics


def _doc() -> dict[str, Any]:
    return {
        "totalTimeMs": 112.919, "generationTimeMs": 0.1 + 0.2, "enqueueVipTimeMs": None,
        "enqueueNormalTimeMs": None, "processing": {"vip": {"timeMs": 33.333333}, "normal": {}},
        "eta": {"estimatedMs": 1234.56789, "progressPercent": 33.33333333},
        "throughput": {"vip": 12345.678901, "normal": None, "overall": 2 / 3 * 100000},
        "counts": {"vipGenerated": 3, "normalGenerated": 7, "vip": 3, "normal": 7},
    }


def _values(families: Any) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.name, tuple(s.labels.values())): s.value for f in families for s in f.samples}


def test_seconds_keep_milliseconds_and_rates_a_tenth() -> None:
    doc = _doc()
    values = {**_values(metrics._time_metrics(doc)), **_values(metrics._order_metrics(doc))}
    assert values[("harness_run_duration_seconds", ())] == 0.113
    assert values[("harness_run_eta_seconds", ())] == 1.235
    assert values[("harness_throughput_orders_per_second", ("VIP",))] == 12345.7
    assert values[("harness_throughput_orders_per_second", ("overall",))] == 66666.7
    for (name, _), value in values.items():
        assert len(repr(value).split(".")[-1]) <= 3 or value.is_integer(), (name, value)
