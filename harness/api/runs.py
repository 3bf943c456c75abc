"""The run's routes: generate, status, logs, health, cancel, reset, and the run history.

Each is the command of the same name (``harness run``, ``status --json``, ``logs``,
``health --json``, ``cancel --json``, ``reset``, ``runs --json``) as a route, with the
original service's paths and query parameters.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from harness import control, history, logs
from harness.api.context import Context
from harness.api.errors import config_error, strict
from harness.api.live import status_headers
from harness.config import RULES, ConfigError, option_help
from harness.errors import NotFound
from harness.launch import launch_detached
from harness.parsing import LIMIT, LOG_LINES

# Query parameter -> setting, for the run settings POST /pedidos/generate accepts.
RUN_PARAMS = {"quantity": "quantity", "chunkSize": "chunk_size", "ordersPerJob": "orders_per_job",
              "concurrency": "concurrency", "seed": "seed", "tierMix": "tier_mix",
              "workMs": "work_ms", "normalBatchSize": "normal_batch_size"}
SETTING_PARAMS = {setting: param for param, setting in RUN_PARAMS.items()}


def _setting(name: str) -> Any:
    """The query parameter that carries setting ``name``, documented as its flag is."""
    return Query(alias=SETTING_PARAMS[name], description=option_help(name))


def _read(name: str) -> Any:
    """Setting ``name`` read from its query parameter as its flag and variable are read."""
    return strict(RULES[name])


def router(ctx: Context) -> APIRouter:
    api = APIRouter(tags=["pedidos"])

    @api.post("/pedidos/generate", status_code=202)
    def generate(
        request: Request,
        quantity: Annotated[int | None, _read("quantity"), _setting("quantity")] = None,
        chunk_size: Annotated[int | None, _read("chunk_size"), _setting("chunk_size")] = None,
        orders_per_job: Annotated[int | None, _read("orders_per_job"), _setting("orders_per_job")] = None,
        concurrency: Annotated[int | None, _read("concurrency"), _setting("concurrency")] = None,
        seed: Annotated[int | None, _read("seed"), _setting("seed")] = None,
        tier_mix: Annotated[str | None, _read("tier_mix"), _setting("tier_mix")] = None,
        work_ms: Annotated[float | None, _read("work_ms"), _setting("work_ms")] = None,
        normal_batch_size: Annotated[int | None, _read("normal_batch_size"),
                                     _setting("normal_batch_size")] = None,
    ) -> JSONResponse:
        """Start a run in its own detached process (it outlives this server) and answer once
        it holds the run lock; 409 while another run is active."""
        given = {"quantity": quantity, "chunk_size": chunk_size, "orders_per_job": orders_per_job,
                 "concurrency": concurrency, "seed": seed, "tier_mix": tier_mix,
                 "work_ms": work_ms, "normal_batch_size": normal_batch_size}
        try:
            settings = ctx.settings.replace(**given)
        except ConfigError as exc:
            raise config_error(request.query_params, SETTING_PARAMS, exc) from None
        launched = launch_detached(settings, ctx.conn)
        return JSONResponse({"runId": launched.run_id, "quantity": settings.quantity,
                             "message": f"run {launched.run_id} started: {settings.quantity:,} orders; "
                                        "GET /pedidos for its status"}, status_code=202)

    @api.get("/pedidos")
    async def status(request: Request) -> Response:
        """The live status of the current or last run: what `harness status --json` prints.
        Every client of this server shares one read, at most 50 ms old; its ETag answers
        If-None-Match with a 304. (harness.api.live serves this path before routing.)"""
        snapshot = await ctx.status_hub.current()
        if snapshot.status == 200 and request.headers.get("if-none-match") == snapshot.etag:
            return Response(status_code=304, headers=status_headers(snapshot))
        return Response(snapshot.body, snapshot.status, status_headers(snapshot),
                        media_type="application/json")

    @api.get("/pedidos/logs")
    def log_lines(lines: Annotated[int, strict(LOG_LINES), Query(ge=1, le=LOG_LINES.high)] = 500
                  ) -> dict[str, Any]:
        """The last lines logged by every process of every host (Redis keeps the last
        10,000, file logging or not)."""
        return {"lines": logs.recent_lines(ctx.conn, lines)}

    @api.get("/pedidos/health/queue")
    def health() -> dict[str, Any]:
        """Queue counters, run phase, heuristics and one classification: healthy, degraded,
        paused, aborted or error (what `harness health --json` prints)."""
        return control.health(ctx.settings, ctx.conn)

    @api.post("/pedidos/cancel")
    def cancel(
        purge: bool = True,
        remove_pending: Annotated[bool, Query(alias="removePending")] = True,
        reset_logs: Annotated[bool, Query(alias="resetLogs")] = False,
        reset_metrics: Annotated[bool, Query(alias="resetMetrics")] = False,
    ) -> dict[str, Any]:
        """Cancel the active run cooperatively and answer once it is recorded ABORTED."""
        result = control.cancel(ctx.settings, purge=purge, remove_pending=remove_pending,
                                reset_metrics=reset_metrics, conn=ctx.conn, reset_logs=reset_logs)
        return result.to_json()

    @api.post("/pedidos/reset")
    def reset(force: bool = False) -> dict[str, Any]:
        """Delete orders, queued jobs, live metrics and state; the run history stays. Refused
        while a run is active unless force=true, which cancels it first."""
        return control.reset(ctx.settings, force=force)

    api.include_router(history_router(ctx))
    return api


def history_router(ctx: Context) -> APIRouter:
    """The run history: what `harness runs --json` prints."""
    api = APIRouter(tags=["pedidos"])

    @api.get("/pedidos/runs", response_model=list[dict[str, Any]])
    async def runs(limit: Annotated[int | None, strict(LIMIT), Query(ge=1, le=LIMIT.high)] = None
                   ) -> Response:
        """Run records from process_runs, newest first (what `harness runs --json` prints).
        Clients asking at once (dashboards, as a run ends) share one read of the store, kept
        while the live status is unchanged, at most a second."""
        state = (await ctx.status_hub.current()).etag  # a run that starts or ends changes it

        def read() -> list[dict[str, Any]]:
            return [r.to_json() for r in history.list_runs(ctx.settings, limit)]

        body = await ctx.shared.get(("runs", limit, state), read)
        return Response(body, media_type="application/json")

    @api.get("/pedidos/runs/{runId}")
    def run_record(runId: str) -> dict[str, Any]:
        """One run's record; 404 for an id process_runs does not hold."""
        record = history.get_run(ctx.settings, runId)
        if record is None:
            raise NotFound(f"no run {runId!r} in process_runs")
        return record.to_json()

    return api
