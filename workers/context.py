"""What a worker process needs, built once per process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from jobs.config import Settings, get_settings
from jobs.service import JobService, build_service
from jobs.storage import BlobStore


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    service: JobService
    store: BlobStore


_context: WorkerContext | None = None
_lock = threading.Lock()


def get_context() -> WorkerContext:
    """The process's context, built once. Locked: a GPU worker's task threads all start at once, and
    each building its own (a database pool, an S3 client: ~0.1 s of GIL-bound work each) delayed the
    first batches by seconds. The worker also builds it before taking tasks."""
    global _context
    with _lock:
        if _context is None:
            settings = get_settings()
            service = build_service(settings)
            _context = WorkerContext(settings, service, service.store)
        return _context
