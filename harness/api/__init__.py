"""The original service's HTTP API (``harness serve``): a thin layer over the Python API.

Every route calls one library function (``harness.status``, ``harness.control``,
``harness.queue``, ``harness.logs``, ``harness.launch``, the store) and turns its result into
JSON and its errors into the status of their branch of ``harness.errors``. The server holds
no state of its own: runs are detached child processes and everything it reports is read
from Redis (or the store) per request, so it can restart mid-run, and any number of servers
agree. Needs the ``[api]`` extra (FastAPI, uvicorn, prometheus-client).
"""

from __future__ import annotations

from harness.api.app import create_app

__all__ = ["create_app"]
