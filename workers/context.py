"""What a worker process needs, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from jobs.config import Settings, get_settings
from jobs.service import JobService, build_service
from jobs.storage import BlobStore


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    service: JobService
    store: BlobStore


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = get_settings()
    service = build_service(settings)
    return WorkerContext(settings, service, service.store)
