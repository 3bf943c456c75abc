"""Every error as ``{"error": "<one message>"}`` with the status of its branch of
``harness.errors``; never a traceback.

A bad query value is a 400 naming the parameter and the value (``quantity='  5': quantity
must be an integer, ...``), with the message the CLI gives for the same value: every
integer, number and text parameter is read by the rule of :mod:`harness.parsing` the CLI's
flag and the environment variable use (:func:`strict`), not by pydantic's int() and
float(), which take ' 5', '1_000', '+4', '5.0' and numbers no store can hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from harness.config import redact
from harness.errors import BadInput, ConfigError, HarnessError
from harness.parsing import Rule

log = logging.getLogger("harness.api")


REFUSED = "harness"  # the pydantic error type of a value a harness rule refused


def strict(rule: Rule) -> BeforeValidator:
    """Read a query parameter with ``rule``, as its flag and variable are read: put it in the
    parameter's ``Annotated`` (``Annotated[int, strict(LIMIT), Query(...)]``). A refusal is
    a 400 with the rule's message; the parameter's documented type stays the declared one."""

    def read(value: Any) -> Any:
        try:
            return rule.take(value)
        except ConfigError as exc:
            raise PydanticCustomError(REFUSED, "{message}", {"message": str(exc)}) from None

    return BeforeValidator(read)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": redact(message)}, status_code=status, headers=headers)


def _bad_value(name: str, raw: Any, message: str) -> str:
    return f"{name}={raw!r}: {message}" if raw is not None else f"{name}: {message}"


@contextmanager
def naming(params: Mapping[str, str], name: str) -> Iterator[None]:
    """Re-raise bad input met while using query parameter ``name`` with its name and value."""
    try:
        yield
    except BadInput as exc:
        raise BadInput(_bad_value(name, params.get(name), str(exc))) from None


def config_error(params: Mapping[str, str], names: Mapping[str, str], exc: ConfigError) -> BadInput:
    """A ConfigError from building Settings, naming the query parameter that carried the
    value (``names``: setting -> parameter); a setting no parameter carried is the server's."""
    name = names.get(exc.field or "")
    if name is None or name not in params:
        return BadInput(f"the server's settings: {exc}")
    return BadInput(_bad_value(name, params[name], str(exc)))


def install(app: FastAPI, redis_url: str) -> None:
    @app.exception_handler(HarnessError)
    async def harness_error(request: Request, exc: HarnessError) -> JSONResponse:
        return error_response(exc.http_status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(part) for part in err.get("loc", ()) if part not in ("query", "path", "body")]
            name = ".".join(loc) or "request"
            raw = request.query_params.get(name, request.path_params.get(name))
            if err.get("type") == "missing":
                problems.append(f"{name} is required")
            else:
                problems.append(_bad_value(name, raw, str(err.get("msg", "invalid value"))))
        return error_response(400, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, message, exc.headers)

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, exc: RedisError) -> JSONResponse:
        return error_response(503, f"Redis at {redact(redis_url)} does not answer: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log (redacted), never into the response.
        return error_response(500, f"internal error ({type(exc).__name__}); see the server's log")
