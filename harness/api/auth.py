"""The bearer token: with ``HARNESS_API_TOKEN`` set, every request that changes something
(any method but GET, HEAD and OPTIONS) needs ``Authorization: Bearer <token>``; reads stay
open, as the original's dashboards polled ``GET /pedidos`` without credentials.

A pure ASGI middleware rather than a dependency per route: no POST route can be added
without it, and GETs (the hot path: dashboards polling status) pay one comparison. The
token is compared in constant time and never echoed, logged or stored.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSAL = json.dumps({"error": "this request needs the API token: 'Authorization: Bearer <token>' "
                      "(HARNESS_API_TOKEN on the server)"}).encode()


def token_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class BearerToken:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in OPEN_METHODS:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(REFUSAL)).encode())]})
        await send({"type": "http.response.body", "body": REFUSAL})
