"""The queue routes, the original's /pedidos/queue/*: `harness queue pause|resume|clean|
status|jobs|close` as routes. States take BullMQ's names too (``wait``, ``delayed``...)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from harness import control
from harness import queue as rq_queue
from harness.api.context import Context
from harness.api.errors import naming, strict
from harness.parsing import CLOSE_TIMEOUT, JOBS_LIMIT


def router(ctx: Context) -> APIRouter:
    api = APIRouter(prefix="/pedidos/queue", tags=["queue"])

    @api.post("/pause")
    def pause() -> dict[str, Any]:
        """Workers take no new job until resumed (a running batch finishes)."""
        rq_queue.pause(ctx.conn)
        return {"paused": True}

    @api.post("/resume")
    def resume() -> dict[str, Any]:
        """Let workers take jobs again."""
        rq_queue.resume(ctx.conn)
        return {"paused": False}

    @api.post("/clean")
    def clean(
        request: Request,
        state: Annotated[str, Query(description="wait/waiting, completed, failed, delayed, "
                                                "deferred, scheduled, paused, prioritized or all")],
        force: Annotated[bool, Query(description="clean waiting jobs even while a run is active")] = False,
    ) -> dict[str, Any]:
        """Delete every job in one state from both queues; active is refused (cancel the run),
        and waiting (or all) while a run is active, unless force=true."""
        with naming(request.query_params, "state"):
            removed = control.clean_queue(ctx.conn, state, force=force)
        return {"state": state, "removed": removed}

    @api.get("/status")
    def status() -> dict[str, Any]:
        """Raw job counts per queue and state, whether the queues are paused, and workers."""
        return rq_queue.status(ctx.conn)

    @api.get("/jobs")
    def jobs(
        request: Request,
        types: Annotated[str, Query(description="comma-separated states")] = "waiting,active",
        limit: Annotated[int, strict(JOBS_LIMIT), Query(ge=JOBS_LIMIT.low, le=JOBS_LIMIT.high,
                                                        description="per queue and state")] = 20,
    ) -> list[dict[str, Any]]:
        """Jobs by state, at most ``limit`` per queue and state."""
        with naming(request.query_params, "types"):
            states = rq_queue.parse_states(types)  # as `harness queue jobs -t` reads them
        return rq_queue.jobs(ctx.conn, states, limit)

    @api.post("/close")
    def close(
        timeout: Annotated[float, strict(CLOSE_TIMEOUT),
                           Query(alias="timeoutS", gt=CLOSE_TIMEOUT.low, le=CLOSE_TIMEOUT.high,
                                 description="seconds to wait for the workers to exit")] = 15.0,
    ) -> dict[str, Any]:
        """Ask every harness worker pool to stop (running batches finish); refused (409)
        while a run is active. ``left`` counts workers still registered after the wait."""
        done = control.close_workers(ctx.conn, timeout)
        return {"before": done.before, "stopped": done.stopped, "left": done.left}

    return api
