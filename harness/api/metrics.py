"""``GET /metrics``: Prometheus text format, read from Redis at scrape time.

A custom collector, not counters kept in this process: the server holds no state, so a
restarted server, or several behind a balancer, report the same figures, and a run started
from the CLI shows up as well as one started through the API. Counters are the run's own
(they start again at 0 with the next run, which Prometheus's ``rate()`` reads as a reset).
Each scrape costs the same reads as ``GET /pedidos`` plus ``GET /pedidos/queue/status``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis

from harness import queue as rq_queue
from harness.api.context import Context
from harness.state import Phase
from harness.status import get_status

# Step of a run -> where the status document keeps its duration in milliseconds.
STEPS = {"generation": ("generationTimeMs",), "enqueue_vip": ("enqueueVipTimeMs",),
         "enqueue_normal": ("enqueueNormalTimeMs",), "processing_vip": ("processing", "vip", "timeMs"),
         "processing_normal": ("processing", "normal", "timeMs")}


def _dig(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc.get(key) or {}
    return doc if isinstance(doc, int | float) else None


def _seconds(ms: float | None) -> float | None:
    """Milliseconds as seconds, to the millisecond they were measured in: a value such as
    0.11291899999999999 is float arithmetic's, not a measurement's."""
    return round(ms / 1000, 3) if ms is not None else None


class HarnessCollector(Collector):
    """Maps the status document and the queue status onto metric families, per scrape."""

    def __init__(self, conn: Redis) -> None:
        self.conn = conn

    def describe(self) -> list[Metric]:
        return []  # no read of Redis when the collector is registered

    def collect(self) -> Iterator[Metric]:
        doc = get_status(self.conn)
        yield from _run_metrics(doc)
        yield from _order_metrics(doc)
        yield from _time_metrics(doc)
        yield from _queue_metrics(doc, rq_queue.status(self.conn))


def _run_metrics(doc: dict[str, Any]) -> Iterator[Metric]:
    info = GaugeMetricFamily("harness_run_info", "The current (or last) run; value 1",
                             labels=["run_id"])
    if doc["lastRunId"]:
        info.add_metric([doc["lastRunId"]], 1)
    yield info
    phase = GaugeMetricFamily("harness_run_phase", "1 for the phase the current (or last) "
                              "run is in, 0 for the others", labels=["phase"])
    for p in Phase:
        phase.add_metric([p.value], 1 if doc["phase"] == p.value else 0)
    yield phase
    yield GaugeMetricFamily("harness_run_active", "1 while a run is in progress",
                            value=1 if doc["isProcessing"] else 0)
    yield GaugeMetricFamily("harness_run_target_orders", "Orders the run generates",
                            value=doc["progress"]["target"])
    yield GaugeMetricFamily("harness_run_progress_ratio", "Processed orders over the target",
                            value=round(doc["eta"]["progressPercent"] / 100, 4))


def _order_metrics(doc: dict[str, Any]) -> Iterator[Metric]:
    generated = CounterMetricFamily("harness_orders_generated", "Orders generated and "
                                    "enqueued by the run, by priority", labels=["priority"])
    processed = CounterMetricFamily("harness_orders_processed", "Orders the run has "
                                    "processed (committed in the store), by priority",
                                    labels=["priority"])
    for priority, key in (("VIP", "vip"), ("NORMAL", "normal")):
        generated.add_metric([priority], doc["counts"][f"{key}Generated"])
        processed.add_metric([priority], doc["counts"][key])
    yield generated
    yield processed

    throughput = GaugeMetricFamily("harness_throughput_orders_per_second", "Orders processed "
                                   "per second: each priority over its processing window, "
                                   "overall over the run's time", labels=["priority"])
    for label, value in (("VIP", doc["throughput"]["vip"]), ("NORMAL", doc["throughput"]["normal"]),
                         ("overall", doc["throughput"]["overall"])):
        if value is not None:
            throughput.add_metric([label], round(value, 1))  # orders/s: a tenth is plenty
    yield throughput


def _time_metrics(doc: dict[str, Any]) -> Iterator[Metric]:
    duration = GaugeMetricFamily("harness_run_duration_seconds", "Time since the run "
                                 "started, or its total time once it ended")
    if (total := _seconds(doc["totalTimeMs"])) is not None:
        duration.add_metric([], total)
    yield duration
    steps = GaugeMetricFamily("harness_run_step_duration_seconds", "Time each step of the run "
                              "took so far", labels=["step"])
    for step, path in STEPS.items():
        if (seconds := _seconds(_dig(doc, path))) is not None:
            steps.add_metric([step], seconds)
    yield steps
    eta = GaugeMetricFamily("harness_run_eta_seconds", "Estimated time left (0 once DONE)")
    if (left := _seconds(doc["eta"]["estimatedMs"])) is not None:
        eta.add_metric([], left)
    yield eta


def _queue_metrics(doc: dict[str, Any], queues: dict[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("harness_queue_jobs", "Jobs per queue and state (BullMQ's "
                              "names: waiting, active, completed, failed, plus deferred and "
                              "scheduled)", labels=["queue", "state"])
    for name, counts in queues["counts"].items():
        if name != "total":
            for state, n in counts.items():
                depth.add_metric([name, state], n)
    yield depth
    yield GaugeMetricFamily("harness_dead_letter_jobs", "Batches that failed every try "
                            "(dead-lettered)", value=doc["deadLetters"]["count"])
    yield GaugeMetricFamily("harness_queue_paused", "1 while the queues are paused",
                            value=1 if queues["paused"] else 0)
    yield GaugeMetricFamily("harness_workers", "Workers registered on the harness queues",
                            value=queues["workers"])


def router(ctx: Context) -> APIRouter:
    api = APIRouter(tags=["metrics"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HarnessCollector(ctx.conn))

    @api.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus text format, read from Redis now."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api
