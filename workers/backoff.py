"""How long a task waits before its retry."""

from __future__ import annotations

from celery.utils.time import get_exponential_backoff_interval


def backoff(retries: int, maximum: int) -> int:
    """Celery's own exponential backoff with full jitter (what ``retry_backoff``/``retry_jitter`` use), so
    the tasks of many workers cut off by one outage do not all come back in the same second. The tasks
    call ``task.retry`` themselves rather than ``autoretry_for``: an inference retry carries its claims
    (``held``) in its arguments, which autoretry cannot add."""
    return get_exponential_backoff_interval(factor=1, retries=retries, maximum=maximum, full_jitter=True)
