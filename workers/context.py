"""What a worker process needs, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from jobs.config import Settings, get_settings
from jobs.dispatch import CeleryDispatcher
from jobs.reprocess import Reprocessor
from jobs.service import JobService, build_service
from jobs.storage import BlobStore

Lane = Literal["normal", "low"]


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    service: JobService
    store: BlobStore


@lru_cache(maxsize=2)
def get_context(lane: Lane = "normal") -> WorkerContext:
    """The low lane's context sends the work it makes (a re-prepped source's pages) to the low queues."""
    settings = get_settings()
    service = build_service(settings)
    if lane == "low":
        service = JobService(service.sessions, service.store, CeleryDispatcher(settings, low=True), settings)
    return WorkerContext(settings, service, service.store)


def get_reprocessor() -> Reprocessor:
    ctx = get_context("low")
    return Reprocessor(ctx.service, CeleryDispatcher(ctx.settings, low=True))
