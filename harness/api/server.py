"""``harness serve``: the app on uvicorn, one process, one event loop.

One worker: the server does little per request (one Redis round trip for status) and the
machine's cores belong to the run it measures. Blocking library calls run in FastAPI's
thread pool. SIGTERM stops the server (uvicorn's graceful shutdown, streams cut after a
few seconds) and never the runs it started: they are detached processes of their own.
What one connection may hold of the server (a header timeout, a head size, a concurrency
limit) is :mod:`harness.api.limits`.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from harness.api import limits
from harness.api.app import create_app
from harness.config import Settings
from harness.logs import FORMAT

GRACEFUL_SHUTDOWN_S = 3


def log_config() -> dict[str, Any]:
    """uvicorn's loggers through the harness's redacting formatter (a traceback may quote a
    URI); the token is never logged at all (headers are not)."""
    formatter = {"()": "harness.logs.RedactingFormatter", "fmt": FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "redacted", "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"redacted": formatter}, "handlers": {"stderr": handler},
        "loggers": {name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "harness.api")},
    }


def serve(settings: Settings, host: str, access_log: bool = False) -> None:
    """Serve the API on ``host``:``settings.port`` until SIGINT or SIGTERM."""
    app = create_app(settings)
    uvicorn.run(app, host=host, port=settings.port, log_config=log_config(), access_log=access_log,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False,
                **limits.server_options())  # header timeout, sizes: see limits
