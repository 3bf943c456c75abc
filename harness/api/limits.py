"""What one HTTP connection may take of the server, and for how long.

uvicorn bounds a connection only *between* requests (``timeout_keep_alive``): a connection
that never finishes the head of its request (request line and headers) is held for ever,
and httptools, the parser it prefers, sets no limit on a head's size. ~20,000 connections
each sending part of a head made new connections reset and the server grow from 72 to
184 MB. What the server does about it, chosen here:

* **a header timeout**, ``HEAD_TIMEOUT_S`` (10 s): a connection must complete the head of a
  request within 10 s of connecting, or of the first byte of its next request on a
  kept-alive connection; else it is closed. This is what ends slow or stalled heads
  (slowloris): a client trickling a byte at a time gains nothing, the clock does not
  restart. uvicorn has no such setting, so :class:`HeadLimits` adds it to uvicorn's own
  protocol (httptools' or h11's), using nothing but their ``cycle`` (set once a head is
  complete) and the event loop.
* **a head size**, ``MAX_HEAD_BYTES`` (64 KiB): a connection that sends more than that
  without completing a head is answered 431 and closed (h11's own limit,
  ``h11_max_incomplete_event_size``, is set to the same; every route here takes only query
  parameters).
* **a concurrency limit**, ``limit_concurrency`` = ``LIMIT_CONCURRENCY`` (2,000 connections or
  tasks): past it, a new request is answered 503 at once instead of queueing; a dashboard
  fleet's 1,000 open SSE streams fit under it.
* **idle keep-alive**: uvicorn's ``timeout_keep_alive``, kept at 5 s.

The header timeout is the one that bounds what idle or partial connections hold, however
many arrive: each is gone after 10 s. The limit on concurrency keeps the requests that do
complete from piling up behind a stalled backend (a frozen Redis: each route answers 503
within the Redis command timeout, see :mod:`harness.connection`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

HEAD_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 64 * 1024
LIMIT_CONCURRENCY = 2_000
KEEP_ALIVE_S = 5


class HeadLimits:
    """Mixed into a uvicorn HTTP protocol: the header timeout and head size above."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head():
            self._arm()
        super().data_received(data)  # type: ignore[misc]
        if not self._awaiting_head():  # the head is complete: the request is under way
            self._disarm()
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431, "Request Header Fields Too Large",
                         f"the request's head (request line and headers) is over "
                         f"{MAX_HEAD_BYTES // 1024} KiB")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _awaiting_head(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = 0

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head() and not self.transport.is_closing():
            self._refuse(408, "Request Timeout",
                         f"no complete request head within {HEAD_TIMEOUT_S:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` as every error is answered (``{"error": ...}``), and close."""
        body = json.dumps({"error": message}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        self.transport.close()


def protocol() -> type[asyncio.Protocol]:
    """uvicorn's preferred HTTP protocol (httptools if installed, else h11) with
    :class:`HeadLimits`."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # no httptools: uvicorn's pure-Python h11
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    return type(f"Limited{Base.__name__}", (HeadLimits, Base), {})


def server_options() -> dict[str, Any]:
    """The uvicorn.Config arguments that apply the limits above."""
    return {"http": protocol(), "limit_concurrency": LIMIT_CONCURRENCY,
            "timeout_keep_alive": KEEP_ALIVE_S, "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
