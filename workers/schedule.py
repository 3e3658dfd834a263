"""Celery beat's schedule: one dict, ``beat_schedule(settings)``, that ``vlmq beat`` runs. Add a
periodic task with one more entry (task name, schedule in seconds or a crontab, options)."""

from __future__ import annotations

from typing import Any

from jobs.config import Settings
from jobs.dispatch import MAINTENANCE_QUEUE, SWEEP_TASK, queue


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    every = settings.queue.sweep_interval_seconds
    return {
        "vlmq-sweep": {
            "task": SWEEP_TASK,
            "schedule": every,
            # A sweep not started within one interval is dropped: the next one does the same work.
            "options": {"queue": queue(MAINTENANCE_QUEUE), "expires": every},
        },
    }
