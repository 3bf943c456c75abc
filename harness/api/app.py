"""The app factory: routes by concern, errors as JSON, the token on every POST."""

from __future__ import annotations

from fastapi import FastAPI
from redis import Redis

from harness.api import errors, metrics, pages, queue, runs, streams
from harness.api.auth import BearerToken
from harness.api.context import Context
from harness.api.live import StatusFastPath
from harness.config import Settings
from harness.connection import connect_redis

DESCRIPTION = """The order-queue harness over HTTP: the original NestJS service's routes
(`/pedidos/...`, same paths, query parameters and JSON), plus run history, live streams
(Server-Sent Events) and Prometheus metrics. Runs started here are detached processes that
outlive the server. With `HARNESS_API_TOKEN` set, every POST needs
`Authorization: Bearer <token>`; GETs stay open. Errors are `{"error": "..."}`.
The live dashboard is at [`/`](/); these docs are also at [`/redoc`](/redoc)."""


def create_app(settings: Settings, conn: Redis | None = None) -> FastAPI:
    """The HTTP API for ``settings``; ``conn`` defaults to a client for its Redis (checked
    now, so that a server pointed at no Redis says so at once)."""
    from harness import __version__

    ctx = Context.of(settings, conn if conn is not None else connect_redis(settings, autostart=False))
    app = FastAPI(title="harness", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    errors.install(app, settings.redis_address)
    for module in (runs, queue, streams, metrics):
        app.include_router(module.router(ctx))
    pages.install(app, token_required=bool(settings.api_token))
    if settings.api_token:
        app.add_middleware(BearerToken, token=settings.api_token)
    app.add_middleware(StatusFastPath, hub=ctx.status_hub)  # outermost: GET /pedidos first
    return app
