"""The server's shared live reads: one status snapshot and one log follower per server,
whatever the number of clients.

``GET /pedidos`` and every ``/pedidos/stream`` read :class:`StatusHub`: the status document
is read from Redis (one round trip, ``harness.status.get_status``) only when someone asks
and the last read is older than ``MAX_AGE_S`` (50 ms); clients asking meanwhile, however
many, share that read (a stale snapshot is refreshed once, the others wait for it). Each
read is encoded once, with an ETag and its Server-Sent Events frame, so a request costs the
server a dictionary lookup and a write, and a client holding the ETag gets a 304. The
staleness a client sees is at most 50 ms plus one Redis round trip.

``/pedidos/logs/stream`` reads :class:`LogHub` the same way: one follower of the lines kept in
Redis (``harness.logs``), refreshed at most every ``LOG_MAX_AGE_S``; each stream keeps its own
place in a shared buffer of the newest lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from redis import Redis
from redis.exceptions import RedisError

from harness import logs
from harness.config import redact
from harness.status import get_status

log = logging.getLogger("harness.api")
MAX_AGE_S = 0.05
LOG_MAX_AGE_S = 0.1
LOG_BUFFER = 2_000  # lines a log stream can catch up on (and send as history)
T = TypeVar("T")


def encode(doc: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it (compact, UTF-8)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def sse(event: str, body: bytes, event_id: str | None = None) -> bytes:
    """One Server-Sent Events frame; ``body`` is one line of JSON."""
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


@dataclass(frozen=True)
class Snapshot:
    """One read of the status, encoded: the HTTP status (200, 503 with Redis away, 500),
    the body, its ETag, its SSE frame, and when it was read (monotonic seconds)."""

    status: int
    body: bytes
    etag: str
    event: bytes
    taken: float

    @classmethod
    def of(cls, status: int, doc: Any, taken: float) -> Snapshot:
        body = encode(doc)
        etag = '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
        return cls(status, body, etag, sse("status" if status == 200 else "error", body), taken)


class SingleFlight:
    """At most one refresh at a time: callers that arrive while one runs wait for it. A
    caller that goes away (a client disconnecting) does not cancel it for the others."""

    def __init__(self) -> None:
        self._running: asyncio.Task[Any] | None = None

    async def run(self, refresh: Callable[[], Awaitable[T]]) -> T:
        if self._running is None:
            self._running = asyncio.ensure_future(refresh())
            self._running.add_done_callback(self._done)
        result: T = await asyncio.shield(self._running)
        return result

    @property
    def busy(self) -> bool:
        return self._running is not None

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter gets it; nothing logged as lost


class StatusHub:
    """The status document of this server, at most ``max_age`` seconds old."""

    def __init__(self, conn: Redis, redis_url: str, max_age: float = MAX_AGE_S,
                 read: Callable[[Redis], dict[str, Any]] = get_status) -> None:
        self.conn, self.redis_url, self.max_age, self.read = conn, redis_url, max_age, read
        self.reads = 0  # Redis reads so far (a test and the measuring script look)
        self._snapshot: Snapshot | None = None
        self._flight = SingleFlight()

    def invalidate(self) -> None:
        """Forget the snapshot: the next read takes a fresh one. Called after every write
        through this server (a reset, a cancel, a start), so that its client reads its own
        write instead of a state up to ``max_age`` older than it."""
        self._snapshot = None

    async def current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - snapshot.taken < self.max_age:
            return snapshot
        return await self._flight.run(self._take)

    async def _take(self) -> Snapshot:
        taken = time.monotonic()
        self.reads += 1
        try:
            doc = await anyio.to_thread.run_sync(self.read, self.conn)
            snapshot = Snapshot.of(200, doc, taken)
        except RedisError as exc:
            snapshot = Snapshot.of(503, {"error": redact(
                f"Redis at {redact(self.redis_url)} does not answer: {exc}")}, taken)
        except Exception as exc:
            log.exception("reading the status failed")
            snapshot = Snapshot.of(500, {"error": f"internal error ({type(exc).__name__}); "
                                                  "see the server's log"}, taken)
        self._snapshot = snapshot
        return snapshot


class LogHub:
    """The newest lines kept in Redis, followed by one reader for this server. Line
    numbers count every line ever appended (``harness.logs.LOG_COUNT_KEY``); a stream keeps
    the number of the last line it sent."""

    def __init__(self, conn: Redis, max_age: float = LOG_MAX_AGE_S, buffer: int = LOG_BUFFER) -> None:
        self.conn, self.max_age, self.buffer = conn, max_age, buffer
        self.count = 0  # lines appended so far, as last read
        self._lines: list[str] = []  # the newest lines, the last one numbered self.count
        self._taken = float("-inf")
        self._started = False
        self._flight = SingleFlight()

    async def refresh(self) -> int:
        """Read new lines if the last read is older than max_age; return the count."""
        if time.monotonic() - self._taken >= self.max_age:
            await self._flight.run(self._take)
        return self.count

    async def _take(self) -> None:
        taken = time.monotonic()
        seen = self.count if self._started else 0
        count, new = await anyio.to_thread.run_sync(logs.lines_since, self.conn, seen, self.buffer)
        if count < seen or not self._started:  # first read, or Redis lost the count: start over
            self._lines = new
        else:
            self._lines.extend(new)
        if len(self._lines) > 2 * self.buffer:
            del self._lines[:-self.buffer]
        self.count, self._taken, self._started = count, taken, True

    def after(self, number: int) -> list[str]:
        """The lines numbered above ``number`` that the buffer still holds."""
        if number >= self.count:
            return []
        return self._lines[max(0, len(self._lines) - (self.count - number)):]


def _matches(header: bytes | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak or strong, or ``*``)."""
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.decode("latin-1").split(",")]
    return "*" in tags or etag in tags


def status_headers(snapshot: Snapshot) -> dict[str, str]:
    return {"etag": snapshot.etag, "cache-control": "no-cache"}


class StatusFastPath:
    """``GET /pedidos`` (and HEAD) answered from the snapshot before any routing: the
    hot path of every dashboard, a dictionary lookup and one write. The route FastAPI
    documents answers the same for anything this lets through."""

    PATH = "/pedidos"

    def __init__(self, app: Any, hub: StatusHub) -> None:
        self.app, self.hub = app, hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):  # a write: later reads see it
            try:
                await self.app(scope, receive, send)
            finally:
                self.hub.invalidate()
            return
        if scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        snapshot = await self.hub.current()
        given = next((v for k, v in scope["headers"] if k == b"if-none-match"), None)
        headers = [(b"etag", snapshot.etag.encode()), (b"cache-control", b"no-cache")]
        if snapshot.status == 200 and _matches(given, snapshot.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(snapshot.body)).encode())]
        await send({"type": "http.response.start", "status": snapshot.status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else snapshot.body})


class SharedReads:
    """Reads that many clients make at the same moment (50 dashboards asking for the run
    history as a run ends), made once: an answer is kept for its key (which names the state
    it depends on) at most ``max_age`` seconds, and clients asking meanwhile share it."""

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self._kept: dict[Any, tuple[float, bytes]] = {}
        self._flights: dict[Any, SingleFlight] = {}

    async def get(self, key: Any, read: Callable[[], Any]) -> bytes:
        kept = self._kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < self.max_age:
            return kept[1]

        async def take() -> bytes:
            taken = time.monotonic()
            body = encode(await anyio.to_thread.run_sync(read))
            now = time.monotonic()
            self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self.max_age}
            self._kept[key] = (taken, body)
            return body

        flight = self._flights.setdefault(key, SingleFlight())
        try:
            return await flight.run(take)
        finally:
            if not flight.busy:
                self._flights.pop(key, None)
