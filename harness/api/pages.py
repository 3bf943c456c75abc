"""The pages a browser opens: the live dashboard at ``/``, and the API docs at ``/docs``
(Swagger UI) and ``/redoc``, all served from this package, with no network.

The dashboard is static files (``harness/api/static/``, shipped as package data: an
installed harness serves them as a checkout does): HTML, one script and one stylesheet of
ours, and uPlot, vendored with its licence under ``static/vendor/``. It reads the same routes
as any client (the status and log streams, the run history, the queue status) and steers
with the same POSTs. The server tells it one thing, in a meta tag: whether POSTs need the
API token (never the token itself).

The docs' assets come from the ``fastapi-offline`` package (Swagger UI and ReDoc bundles,
installed with the ``[api]`` extra), served under ``/docs-assets``.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = "/static"
DOCS_ASSETS = "/docs-assets"
TOKEN_MARK = b"{{tokenRequired}}"


def _folder(package: str, name: str) -> Path:
    """A package's data folder on disk (package data is installed as files)."""
    with as_file(files(package) / name) as path:
        return Path(path)


def install(app: FastAPI, token_required: bool) -> None:
    """Add the dashboard at ``/``, its files under STATIC, and the offline docs."""
    static = _folder("harness.api", "static")
    page = (static / "index.html").read_bytes().replace(
        TOKEN_MARK, b"true" if token_required else b"false")
    app.mount(STATIC, StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    docs = _folder("fastapi_offline", "static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs), name="docs-assets")
    title, openapi = app.title, app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi, title=f"{title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # No badge fetched from the public validator: the docs work offline.
            swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi, title=f"{title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                              with_google_fonts=False)
