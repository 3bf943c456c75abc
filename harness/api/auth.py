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


def token_matches(header: bytes | str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared as bytes: a token that is not ASCII
    (``HARNESS_API_TOKEN='tök'``) matches the header a client sends, UTF-8 encoded (curl from
    a UTF-8 terminal, httpx given bytes), or Latin-1 as HTTP's old default."""
    raw = header.encode("latin-1", "replace") if isinstance(header, str) else header or b""
    scheme, _, given = raw.partition(b" ")
    given = given.strip()
    forms = {token.encode("utf-8")}
    if not token.isascii() and all(ord(c) < 256 for c in token):
        forms.add(token.encode("latin-1"))
    matches = [hmac.compare_digest(given, form) for form in sorted(forms)]  # each compared
    return scheme.lower() == b"bearer" and any(matches)


class BearerToken:
    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in OPEN_METHODS:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(REFUSAL)).encode())]})
        await send({"type": "http.response.body", "body": REFUSAL})
