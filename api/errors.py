"""Every error leaves the API in one envelope:
`{"error": {"code": "<snake_case>", "message": "<sentence>", "field": "<optional>"}}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recovery.errors import RateLimited, RecoveryError, Unavailable

log = logging.getLogger("recovery.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def envelope(code: str, message: str, field: str | None = None) -> dict[str, dict[str, str]]:
    """The error envelope itself: the one shape of every error the API answers, also where
    no FastAPI response exists yet (the body guard, the HTTP server's own refusals)."""
    err = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(envelope(code, message, field), status_code=status, headers=headers)


def validation_response(exc: ValidationError | RequestValidationError) -> JSONResponse:
    """A 422 naming the first offending field, with every problem in the message."""
    errors = exc.errors()
    problems = []
    first_field = None
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or None
        first_field = first_field or field
        problems.append(f"{field}: {e.get('msg')}" if field else str(e.get("msg")))
    return error_response(422, "validation_error", "; ".join(problems)[:1000], first_field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RecoveryError)
    async def _domain(_: Request, exc: RecoveryError) -> JSONResponse:
        headers = None
        if isinstance(exc, Unavailable | RateLimited):
            headers = {"Retry-After": str(exc.retry_after_seconds)}
        return error_response(exc.status, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an unexpected error occurred")
