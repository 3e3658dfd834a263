"""Celery beat's schedule: one dict, ``beat_schedule(settings)``, that ``vlmq beat`` runs (no side
effects: tests read it without a broker). Add a periodic task with one more entry (task name, schedule
in seconds or a crontab, options)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from jobs.adapters.dispatch import GPU_QUEUE, MAINTENANCE_QUEUE, REPROCESS_TASK, SWEEP_TASK, queue
from jobs.config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic tasks, for `vlmq beat` (run exactly one; see README "Reprocessing", RELIABILITY.md)."""
    every = settings.queue.sweep_interval_seconds
    schedule: dict[str, dict[str, Any]] = {
        "vlmq-sweep": {
            "task": SWEEP_TASK,
            "schedule": every,
            # A sweep not started within one interval is dropped: the next one does the same work.
            "options": {"queue": queue(MAINTENANCE_QUEUE), "expires": every},
        },
    }
    if settings.reprocess.schedule:
        # On the gpu queue: the task selects by the model the inference workers run, and those are
        # the workers that have it configured (VLMQ_MODEL__*).
        schedule["reprocess"] = {
            "task": REPROCESS_TASK,
            "schedule": crontab.from_string(settings.reprocess.schedule),
            "options": {"queue": GPU_QUEUE},
        }
    return schedule
