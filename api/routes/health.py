"""/healthz: Postgres, Redis and S3 each answer, or the API says which does not (503): readiness.
/livez: the process serves requests, touching nothing else: liveness (a database outage must not
restart every API pod)."""

from __future__ import annotations

from collections.abc import Callable

import redis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from jobs.adapters.dispatch import broker_url

router = APIRouter(tags=["health"])


def _check(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as e:  # a health check reports every failure, whatever its type
        return f"error: {type(e).__name__}: {str(e)[:200]}"
    return "ok"


def _checks(request: Request) -> dict[str, str]:
    service, settings = request.app.state.service, request.app.state.settings

    def db() -> None:
        with service.sessions() as s:
            s.execute(text("SELECT 1"))

    def broker() -> None:
        client = redis.Redis.from_url(broker_url(settings), socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()

    return {"postgres": _check(db), "redis": _check(broker), "s3": _check(service.store.ping)}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(_checks, request)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503)


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}
