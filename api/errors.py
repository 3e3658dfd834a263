"""One table from domain errors to HTTP answers; every error body is {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from jobs import errors as e
from jobs.adapters.db import DB_UNAVAILABLE

log = logging.getLogger(__name__)

STATUS: list[tuple[type[e.VlmqError], int]] = [  # first match wins: subclasses before their parents
    (e.Unauthorized, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.TenantLimitExceeded, 429),
    (e.SourceTooLarge, 413),
    (e.ForbiddenUri, 422),
    (e.InvalidInput, 422),
    (e.PermanentError, 422),
    (e.StorageUnavailable, 503),
    (e.RetryableError, 503),
]


def status_for(err: e.VlmqError) -> int:
    return next((code for cls, code in STATUS if isinstance(err, cls)), 500)


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


async def _domain(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, e.VlmqError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, e.Unauthorized) else None
    return JSONResponse(error_body(err.code, str(err)), status_code=status_for(err), headers=headers)


async def _validation(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    details = [
        {"loc": list(d.get("loc", ())), "msg": d.get("msg", ""), "type": d.get("type", "")}
        for d in err.errors()
    ]
    return JSONResponse(error_body("invalid_request", "request failed validation", details=details), 422)


# Starlette's own answers (an unknown route, a method a route does not take, a multipart body that does
# not parse, a body over its limit: api.limits) in the same shape.
HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              413: "source_too_large", 415: "unsupported_media_type"}  # fmt: skip


async def _http(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    code = getattr(err, "code", None) or HTTP_CODES.get(err.status_code, "http_error")
    message = str(err.detail)
    if err.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
        what = "no such route" if err.status_code == 404 else "method not allowed"
        message = f"{what}: {request.method} {request.url.path}"
    return JSONResponse(error_body(code, message), status_code=err.status_code, headers=err.headers)


async def _database(_: Request, err: Exception) -> JSONResponse:
    """Postgres unreachable (restarting, cut off): 503 in the error shape, as for S3. The soak found
    these as bare 500s ("Internal Server Error", no error body) while Postgres restarted. The driver's
    message (host, port) stays in the log. A transaction Postgres rolled back for a concurrent one (a
    deadlock it broke) is a 503 too, but says so: the database was there (a cancel that lost a
    deadlock was told "cannot be reached", CI)."""
    if str(getattr(getattr(err, "orig", None), "sqlstate", None) or "").startswith(
        "40"
    ):  # transaction rollback
        log.warning("request rolled back by Postgres: %s", str(err)[:300])
        msg = "the request conflicted with a concurrent change and was rolled back; send it again"
        return JSONResponse(
            error_body(e.DatabaseConflict.code, msg), status_code=503, headers={"Retry-After": "1"}
        )
    log.warning("database unavailable: %s: %s", type(err).__name__, str(err)[:300])
    body = error_body(e.DatabaseUnavailable.code, "the database cannot be reached; try again shortly")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.VlmqError, _domain)
    for cls in DB_UNAVAILABLE:
        app.add_exception_handler(cls, _database)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
