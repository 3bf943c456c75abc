"""Live streams as Server-Sent Events: the status document whenever it changes, and new log
lines as they are written.

Each stream polls (Redis for status, the file for logs) at most every ``intervalMs``
(250 ms by default): one HGETALL per client per tick, the same cost as a dashboard polling
``GET /pedidos`` at that rate, and nothing when no client is connected. FastAPI sends a
keep-alive comment when nothing changes for a while; a client that goes away ends its loop.
"""

# No `from __future__ import annotations`: FastAPI must see the local dependency log_file in
# the annotations, which a string annotation would name but not reach.
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from redis.exceptions import RedisError

from harness import logs
from harness.api.context import Context
from harness.api.runs import MAX_LOG_LINES
from harness.config import redact
from harness.status import get_status

Interval = Annotated[int, Query(alias="intervalMs", ge=50, le=60_000,
                                description="how often to look for a change, in ms")]


def router(ctx: Context) -> APIRouter:
    api = APIRouter(tags=["streams"])

    async def read_status() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(get_status, ctx.conn)

    @api.get("/pedidos/stream", response_class=EventSourceResponse)
    async def status_stream(interval_ms: Interval = 250) -> AsyncIterator[ServerSentEvent]:
        """``event: status`` with the GET /pedidos document each time it changes (during a
        run, its elapsed time changes at every look); ``event: error`` while Redis is away."""
        last: Any = None
        while True:
            try:
                doc: Any = await read_status()
                event = "status"
            except RedisError as exc:
                doc, event = {"error": redact(f"Redis does not answer: {exc}")}, "error"
            if doc != last:
                yield ServerSentEvent(data=doc, event=event)
                last = doc
            await anyio.sleep(interval_ms / 1000)

    def log_file() -> Path:  # a dependency: a missing file is a 404 before the stream opens
        return logs.log_file(ctx.settings)

    @api.get("/pedidos/logs/stream", response_class=EventSourceResponse)
    async def log_stream(
        path: Annotated[Path, Depends(log_file)],
        interval_ms: Interval = 250,
        lines: Annotated[int, Query(ge=0, le=MAX_LOG_LINES, description="lines of history to "
                                    "send first")] = 0,
    ) -> AsyncIterator[ServerSentEvent]:
        """``event: log`` with ``{"lines": [...]}`` for the lines written since the last
        event (the last ``lines`` first); follows truncation and rotation. 404 without a
        log file."""
        follower = logs.LogFollower(path, from_end=True)
        if lines:
            yield ServerSentEvent(data={"lines": logs.tail(path, lines)}, event="log")
        while True:
            if new := await anyio.to_thread.run_sync(follower.poll):
                yield ServerSentEvent(data={"lines": new}, event="log")
            await anyio.sleep(interval_ms / 1000)

    return api
