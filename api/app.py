"""The FastAPI application."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.auth import load_keys
from api.limits import BodyLimit
from api.routes import batches, files, health, jobs, metrics, ui
from jobs.config import Settings, get_settings
from jobs.openai.batches import BatchService
from jobs.service import build_service


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The broker connection is opened lazily at the first message: 0.1-0.2 s that the first job
        # after a start would wait. Opened now, beside the startup, never holding it up.
        warm = getattr(app.state.service.dispatcher, "warm", None)
        if warm is not None:
            threading.Thread(target=warm, name="vlmq-warm-broker", daemon=True).start()
        yield

    summary = "Batch jobs for GLM-4.1V document understanding"
    app = FastAPI(title="vlmq", version="0.1.0", summary=summary, lifespan=lifespan)
    app.state.settings = settings
    app.state.service = build_service(settings)
    app.state.batches = BatchService(app.state.service)
    app.state.metrics = metrics.state_registry(app.state.service, settings)
    app.state.api_keys, app.state.dev_key = load_keys(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, settings=settings)
    logging.getLogger("vlmq").info(
        "api: database %s, redis %s, s3 %s", settings.db.url, settings.redis.url, settings.s3.endpoint_url
    )
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(jobs.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(ui.router)
    return app
