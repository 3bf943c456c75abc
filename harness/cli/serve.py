"""`harness serve`: the original service's HTTP API (needs the [api] extra)."""

from __future__ import annotations

from typing import Any

import click

from harness import parsing
from harness.cli.options import Text, connection_options, setting, settings_from
from harness.config import option_help
from harness.errors import MissingExtra

HOST = parsing.Text("host")


@click.command()
@connection_options
@click.option("--host", type=Text(HOST), default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface, e.g. in a container)")
@click.option("--port", type=setting("port"), help=option_help("port"))
@click.option("--access-log", is_flag=True, help="log every request")
def serve(host: str, port: int | None, access_log: bool, **flags: Any) -> None:
    """Serve the HTTP API: POST /pedidos/generate, GET /pedidos, /pedidos/stream, /metrics,
    /docs ... Runs it starts are detached processes that outlive it; Ctrl-C or SIGTERM stops
    the server only."""
    import os

    settings = settings_from(port=port, **flags)
    try:
        from harness.api.server import serve as run_server
    except ImportError as exc:
        raise MissingExtra("api", exc.name or "fastapi") from None
    if port is not None:
        source = f"--port {port}"
    elif os.environ.get("PORT"):
        source = f"PORT={os.environ['PORT']!r}"
    else:
        source = f"the default port {settings.port}"
    run_server(settings, host, access_log=access_log, source=source)
