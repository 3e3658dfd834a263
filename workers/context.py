"""What a worker process needs, built once per process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

from jobs.adapters.dispatch import CeleryDispatcher
from jobs.adapters.storage import BlobStore
from jobs.config import Settings, get_settings
from jobs.reprocessing.reprocessor import Reprocessor
from jobs.service import JobService, build_service

Priority = Literal["normal", "low"]


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    service: JobService
    store: BlobStore


_contexts: dict[Priority, WorkerContext] = {}
_lock = threading.Lock()


def get_context(priority: Priority = "normal") -> WorkerContext:
    """The process's context for a priority, built once. The low one sends the work it makes (a
    re-prepped source's pages) to the low queues. (Not a claim lane: those are workers.lanes.)

    Locked: a GPU worker's task threads all start at once, and each building its own (a database pool,
    an S3 client: ~0.1 s of GIL-bound work each) delayed the first batches by seconds. The worker also
    builds the normal one before taking tasks.
    """
    with _lock:
        if priority not in _contexts:
            settings = get_settings()
            service = build_service(settings)
            if priority == "low":
                dispatcher = CeleryDispatcher(settings, low=True)
                service = JobService(service.sessions, service.store, dispatcher, settings)
            _contexts[priority] = WorkerContext(settings, service, service.store)
        return _contexts[priority]


def get_reprocessor() -> Reprocessor:
    ctx = get_context("low")
    return Reprocessor(ctx.service, CeleryDispatcher(ctx.settings, low=True))


def reset() -> None:
    """Forget the built contexts (tests that change settings between cases)."""
    with _lock:
        _contexts.clear()
