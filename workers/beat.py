"""Celery beat's schedule, built from the settings (no side effects: tests read it without a broker)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from jobs.config import Settings
from jobs.dispatch import GPU_QUEUE, REPROCESS_TASK


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic tasks, for `vlmq beat` (run exactly one; see README "Reprocessing")."""
    schedule: dict[str, dict[str, Any]] = {}
    if settings.reprocess.schedule:
        # On the gpu queue: the task selects by the model the inference workers run, and those are
        # the workers that have it configured (VLMQ_MODEL__*).
        schedule["reprocess"] = {
            "task": REPROCESS_TASK,
            "schedule": crontab.from_string(settings.reprocess.schedule),
            "options": {"queue": GPU_QUEUE},
        }
    return schedule
