"""The live status of a run, in the shape of the original service's ``GET /pedidos``.

Built from the Redis state hash alone (one HGETALL), so asking costs the same at 1,000
orders and at 1,000,000, and never touches the store.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis import Redis

from harness.orders import NORMAL, VIP
from harness.record import WindowFigures
from harness.state import ACTIVE_PHASES, STATE_KEY, Phase


def _float(fields: dict[str, str], key: str) -> float | None:
    value = fields.get(key)
    return float(value) if value not in (None, "") else None


def _int(fields: dict[str, str], key: str) -> int:
    value = fields.get(key)
    return int(value) if value not in (None, "") else 0


def _window(figures: WindowFigures) -> dict[str, Any]:
    """A window as the original's status shows it: start, end, timeMs, count."""
    return {"start": figures.start, "end": figures.end, "timeMs": figures.time_ms,
            "count": figures.count}


def snapshot(fields: dict[str, str], now: float | None = None) -> dict[str, Any]:
    """Turn the raw state hash into the status document."""
    now = time.time() if now is None else now
    phase = fields.get("phase", Phase.IDLE.value)
    active = phase in ACTIVE_PHASES
    target, generated = _int(fields, "target"), _int(fields, "generated")
    windows = {
        p: WindowFigures.of(_int(fields, f"processed:{p}"), _float(fields, f"start:{p}"),
                            _float(fields, f"end:{p}"))
        for p in (VIP, NORMAL)
    }
    processed = windows[VIP].count + windows[NORMAL].count
    started = _float(fields, "startedAt")
    total_ms = _float(fields, "totalTimeMs")
    if total_ms is None and started is not None:
        total_ms = round((now - started) * 1000, 3)
    first_start = min(
        (t for t in (_float(fields, "start:VIP"), _float(fields, "start:NORMAL")) if t), default=None
    )
    eta_ms = None
    if active and first_start is not None and processed:
        rate = processed / max(now - first_start, 1e-6)
        eta_ms = round((target - processed) / rate * 1000)
    elif phase == Phase.DONE.value:
        eta_ms = 0
    return {
        "phase": phase,
        "isProcessing": active,
        "lastRunId": fields.get("runId"),
        "generationTimeMs": _float(fields, "generationTimeMs"),
        "enqueueVipTimeMs": _float(fields, "enqueueVipTimeMs"),
        "enqueueNormalTimeMs": _float(fields, "enqueueNormalTimeMs"),
        "processing": {
            "vip": _window(windows[VIP]),
            "normal": _window(windows[NORMAL]),
        },
        "totalTimeMs": total_ms,
        "counts": {"vip": windows[VIP].count, "normal": windows[NORMAL].count,
                   "vipGenerated": _int(fields, "vipTotal"),
                   "normalGenerated": _int(fields, "normalTotal")},
        "throughput": {
            "vip": windows[VIP].per_sec,
            "normal": windows[NORMAL].per_sec,
            "overall": round(processed / (total_ms / 1000), 1) if total_ms else None,
        },
        "eta": {
            "estimatedMs": eta_ms,
            "progressPercent": round(processed / target * 100, 2) if target else 0.0,
        },
        "progress": {"target": target, "generated": generated, "processedTotal": processed},
        "error": fields.get("error") or None,
        "phases": _phases(fields, phase, now),
        "settings": json.loads(fields["settings"]) if fields.get("settings") else None,
    }


def _phases(fields: dict[str, str], phase: str, now: float) -> list[dict[str, Any]]:
    """The phases the run went through, in order, with how long each took (the current
    one so far); the last is where it ended, with no time."""
    entered = sorted((t, p.value) for p in Phase
                     if (t := _float(fields, f"at:{p.value}")) is not None and p.value != phase)
    if phase != Phase.IDLE.value:
        entered.append((_float(fields, f"at:{phase}") or _float(fields, "finishedAt") or now, phase))
    out = []
    for i, (at, name) in enumerate(entered):
        end = entered[i + 1][0] if i + 1 < len(entered) else (now if name in ACTIVE_PHASES else None)
        out.append({"phase": name, "timeMs": round((end - at) * 1000, 1) if end is not None else None})
    return out


def get_status(conn: Redis) -> dict[str, Any]:
    """The status document of the current (or last) run, with the workers that joined it
    (host, pid, batches done, wherever they run) and its dead-lettered batches: one round
    trip (state and workers hashes, dead-letter counts), a second only when there are some."""
    from rq.registry import FailedJobRegistry
    from rq.utils import as_text

    from harness.queue import queues
    from harness.retries import dead_letters
    from harness.state import WORKERS_KEY, workers_of

    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(STATE_KEY)
    pipe.hgetall(WORKERS_KEY)
    for q in queues(conn).values():
        pipe.zcard(FailedJobRegistry(queue=q).key)
    raw, workers, *failed = pipe.execute()
    doc = snapshot({as_text(k): as_text(v) for k, v in raw.items()})
    doc["workers"] = workers_of(workers)
    dead = sum(failed)
    doc["deadLetters"] = {"count": dead, "batches": dead_letters(conn, limit=5) if dead else []}
    return doc
