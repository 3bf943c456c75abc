"""Live streams as Server-Sent Events: the status document whenever it changes, and new log
lines as they are written, fanned out from the server's shared reads (``harness.api.live``).

A status stream looks at the shared snapshot every ``intervalMs`` (250 ms by default) and
sends its pre-encoded frame when its ETag changed: however many streams are open, Redis is
read at most once per 50 ms. Log streams share one follower of the lines kept in Redis the
same way. Each stream starts with ``retry: 1000`` (a browser's EventSource reconnects a
second after a drop, a server restart included) and sends a comment every KEEPALIVE_S of
silence, so that proxies keep it open; a client that goes away ends its loop.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from harness.api.context import Context
from harness.api.errors import strict
from harness.api.live import LOG_BUFFER, encode, sse
from harness.config import redact
from harness.parsing import INTERVAL_MS, Integer

Interval = Annotated[int, strict(INTERVAL_MS),
                     Query(alias="intervalMs", ge=INTERVAL_MS.low, le=INTERVAL_MS.high,
                           description="how often to look for a change, in ms")]
HISTORY_LINES = Integer("lines", 0, LOG_BUFFER)
KEEPALIVE_S = 15.0
HELLO = b"retry: 1000\n\n"
PING = b": keep-alive\n\n"
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Documented as an event stream; the frames are written here, pre-encoded (FastAPI's own SSE
# support would encode every event again for every client).
EVENT_STREAM: dict[int | str, dict[str, object]] = {200: {
    "description": "Server-Sent Events", "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def router(ctx: Context) -> APIRouter:
    api = APIRouter(tags=["streams"])

    async def status_events(interval_s: float) -> AsyncIterator[bytes]:
        yield HELLO
        last, quiet_since = None, time.monotonic()
        while True:
            snapshot = await ctx.status_hub.current()
            if snapshot.etag != last:
                yield snapshot.event
                last, quiet_since = snapshot.etag, time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                yield PING
                quiet_since = time.monotonic()
            await anyio.sleep(interval_s)

    @api.get("/pedidos/stream", response_class=EventStream, responses=EVENT_STREAM)
    async def status_stream(interval_ms: Interval = 250) -> EventStream:
        """``event: status`` with the GET /pedidos document each time it changes (during a
        run, its elapsed time changes at every look); ``event: error`` while Redis is away.
        The document is the server's shared snapshot, at most 50 ms old."""
        return EventStream(status_events(interval_ms / 1000), headers=HEADERS)

    async def log_events(interval_s: float, history: int, resume: int | None) -> AsyncIterator[bytes]:
        hub = ctx.log_hub
        yield HELLO
        seen, quiet_since = resume, time.monotonic()
        while True:
            try:
                count = await hub.refresh()
            except RedisError as exc:
                yield sse("error", encode({"error": redact(f"Redis does not answer: {exc}")}))
                await anyio.sleep(max(interval_s, 1.0))
                continue
            if seen is None or seen > count:  # the first look, or Redis lost the count
                seen = max(0, count - history)
            if new := hub.after(seen):
                # The id is the count of lines so far: a browser reconnecting sends it back
                # (Last-Event-ID), and the stream goes on from there, on any server.
                yield sse("log", encode({"lines": new}), event_id=str(count))
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                yield PING
                quiet_since = time.monotonic()
            seen = count
            await anyio.sleep(interval_s)

    @api.get("/pedidos/logs/stream", response_class=EventStream, responses=EVENT_STREAM)
    async def log_stream(
        request: Request,
        interval_ms: Interval = 250,
        lines: Annotated[int, strict(HISTORY_LINES),
                         Query(ge=0, le=LOG_BUFFER, description="lines of history to send first")] = 0,
    ) -> EventStream:
        """``event: log`` with ``{"lines": [...]}`` for the lines logged since the last event
        (the last ``lines`` first), by every process of every host: the lines Redis keeps,
        whether or not file logging is on. A client that sends Last-Event-ID (a browser
        reconnecting) gets the lines after that event instead of the history."""
        last = request.headers.get("last-event-id", "")
        resume = int(last) if last.isascii() and last.isdigit() else None
        return EventStream(log_events(interval_ms / 1000, lines, resume), headers=HEADERS)

    return api
