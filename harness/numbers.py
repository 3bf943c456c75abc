"""One way to write a number, for every front end: CLI, notebooks, report and API text.

Readers met ``VIP window 0.00 s (491,214 orders/s)`` for 5,000 orders, ``wait p50 1216.0 /
p99 1335.0 / max 1363.722 ms`` and ``quantity 20000`` side by side. The rules here:

* durations below 1 s in milliseconds, from 1 s in seconds (``412 ms``, ``16.4 s``);
* latencies (and any figure whose precision is made up by arithmetic) to 3 significant
  digits (``1,220 ms``, ``12.9 ms``, ``0.002 ms``);
* thousands separators on every count and rate (``20,000``, ``36,071 orders/s``);
* a rate over a window too short to measure (under :data:`MIN_WINDOW_MS`) is not a rate: it
  shows as :data:`DASH` (5,000 orders over 10 ms "is" 500,000 orders/s, a clock's jitter).
"""

from __future__ import annotations

import math

DASH = "\N{EM DASH}"
# Below this, a window's rate is mostly the clock's resolution and the window's edges.
MIN_WINDOW_MS = 50.0


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def sig(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, with separators: 1,220 / 12.9 / 0.00213."""
    if _missing(value):
        return DASH
    assert value is not None
    if value == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, decimals)  # a negative ``decimals`` rounds to tens, hundreds...
    if decimals <= 0:
        return f"{rounded:,.0f}"
    return f"{rounded:,.{decimals}f}".rstrip("0").rstrip(".")  # 0.400 -> 0.4


def count(value: int | float | None) -> str:
    """A count, with separators: 20,000."""
    return DASH if _missing(value) else f"{value:,.0f}"


def duration(ms: float | None) -> str:
    """``412 ms`` below a second, else ``16.4 s`` (3 significant digits either way)."""
    if _missing(ms):
        return DASH
    assert ms is not None
    if abs(ms) < 1000:
        return f"{sig(ms)} ms"
    return f"{sig(ms / 1000)} s"


def latency(ms: float | None) -> str:
    """A latency in milliseconds, 3 significant digits: ``1,220 ms``."""
    return DASH if _missing(ms) else f"{sig(ms)} ms"


def rate(per_sec: float | None, window_ms: float | None = None, unit: str = "orders/s") -> str:
    """``36,071 orders/s``; :data:`DASH` when the window it was measured over is too short
    (or unknown and the rate missing)."""
    if _missing(per_sec) or (window_ms is not None and window_ms < MIN_WINDOW_MS):
        return DASH
    return f"{per_sec:,.0f} {unit}"


def ratio(value: float | None) -> str:
    """``1.05x`` (with the multiplication sign)."""
    return DASH if _missing(value) else f"{value:.2f}\N{MULTIPLICATION SIGN}"


def p_value(value: float | None) -> str:
    """``p = 0.031``, ``p < 0.001``."""
    if _missing(value):
        return f"p {DASH}"
    assert value is not None
    return "p < 0.001" if value < 0.001 else f"p = {sig(value, 2)}"


def percent(fraction: float | None) -> str:
    """``5.2 %`` of a fraction 0.052."""
    return DASH if _missing(fraction) else f"{sig(100 * fraction, 2)} %"  # type: ignore[operator]
