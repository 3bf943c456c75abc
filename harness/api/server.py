"""``harness serve``: the app on uvicorn, one process, one event loop.

One worker: the server does little per request (one Redis round trip for status) and the
machine's cores belong to the run it measures. Blocking library calls run in FastAPI's
thread pool. SIGTERM stops the server (uvicorn's graceful shutdown, streams cut after a
few seconds) and never the runs it started: they are detached processes of their own.
What one connection may hold of the server (a header timeout, a head size, a concurrency
limit) is :mod:`harness.api.limits`.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn

from harness.api import limits
from harness.api.app import create_app
from harness.config import Settings
from harness.errors import ConfigError
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


def listen(host: str, port: int, source: str) -> socket.socket:
    """A socket bound to ``host``:``port`` (as uvicorn binds one), before the app connects to
    anything: a port in use or a host that cannot be listened on is one line naming
    ``source`` (ConfigError, exit 2), where uvicorn logged its error and exited 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:  # EADDRINUSE, EACCES, EADDRNOTAVAIL, a name that does not resolve
        sock.close()
        raise ConfigError(f"{source}: cannot listen on {host}:{port}: {exc.strerror or exc}",
                          "port") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, host: str, access_log: bool = False,
          source: str = "PORT / --port") -> None:
    """Serve the API on ``host``:``settings.port`` until SIGINT or SIGTERM; the address is
    taken first (a refusal names ``source``), then Redis is checked."""
    sock = listen(host, settings.port, source)
    try:
        app = create_app(settings)
        config = uvicorn.Config(app, host=host, port=settings.port, log_config=log_config(),
                                access_log=access_log, server_header=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                                **limits.server_options())  # header timeout, sizes: see limits
        logging.getLogger("uvicorn.error").info(
            "harness serve on http://%s:%d (Ctrl-C to stop)",
            f"[{host}]" if ":" in host else host, settings.port)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
