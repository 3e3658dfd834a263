"""What a worker process needs, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from jobs.config import Settings, get_settings
from jobs.db import session_factory
from jobs.dispatch import CeleryDispatcher
from jobs.service import JobService
from jobs.storage import BlobStore, S3BlobStore


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    service: JobService
    store: BlobStore


@lru_cache(maxsize=1)
def get_context() -> WorkerContext:
    settings = get_settings()
    store = S3BlobStore(settings)
    service = JobService(session_factory(settings), store, CeleryDispatcher(settings), settings)
    return WorkerContext(settings, service, store)
