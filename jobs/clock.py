"""The one clock: every "now" that expiry, leases, heartbeats, schedules and reprocessing depend on.

Time lives in Postgres: ``vlmq_now()`` (migration 0008) is ``now()`` plus the offset in the one-row
table ``vlmq_clock``, and every SQL "now" of jobs/ is :func:`sql_now`. With no offset row (production:
nothing ever writes one) it is exactly ``now()``. A soak sets ``VLMQ_CLOCK__SIMULATED`` on every process
and calls :func:`advance`: the whole stack, the API, workers and beat, is then days older at once,
without sleeping. Python code that needs the time asks Postgres (:func:`now`), or, where a query per
call would cost too much (Celery beat's schedule), :class:`CachedOffset`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import Function

from jobs.config import Settings

log = logging.getLogger(__name__)


def sql_now() -> Function[datetime]:
    """The SQL expression of the current time (instead of ``func.now()``)."""
    return func.vlmq_now(type_=func.now().type)


def now(s: Session) -> datetime:
    value = s.scalar(text("SELECT vlmq_now()"))
    assert isinstance(value, datetime)
    return value


def offset(s: Session) -> float:
    return float(s.scalar(text("SELECT coalesce((SELECT offset_seconds FROM vlmq_clock), 0)")) or 0.0)


def advance(s: Session, settings: Settings, seconds: float) -> datetime:
    """Move the whole stack's clock ``seconds`` forward (a soak; refused unless simulated). The new now."""
    if not settings.clock.simulated:
        raise RuntimeError("the clock moves only with VLMQ_CLOCK__SIMULATED=true (a soak, never production)")
    if seconds < 0:
        raise ValueError("the clock never goes back")
    s.execute(
        text(
            "INSERT INTO vlmq_clock (id, offset_seconds) VALUES (true, :s)"
            " ON CONFLICT (id) DO UPDATE SET offset_seconds = vlmq_clock.offset_seconds + :s"
        ),
        {"s": seconds},
    )
    return now(s)


class CachedOffset:
    """Real time plus the simulated offset, read from Postgres at most every ``ttl`` seconds: for Celery
    beat, which asks for the time many times a second. Exactly real time when not simulated.

    Postgres unreachable (restarted, cut off): the offset last read stands, and is read again at the next
    call after ``ttl``. Celery asks for the time inside beat's loop and when it sends a task with a
    countdown (a retry): an error here killed beat and turned every retry into a dropped message (the
    soak's Postgres restart). The offset can only move through Postgres, so the last one read is right."""

    def __init__(self, read: Callable[[], float], simulated: bool, ttl: float = 1.0) -> None:
        self.read, self.simulated, self.ttl = read, simulated, ttl
        self._value, self._at = 0.0, float("-inf")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        real = datetime.now(UTC)
        if not self.simulated:
            return real
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._refresh()
            return real + timedelta(seconds=self._value)

    def _refresh(self) -> None:
        try:
            self._value = self.read()
        except Exception as e:  # any driver's error: the time must still be told
            log.warning("clock: offset not read (%s: %s); %.0f s stands", type(e).__name__, e, self._value)
        self._at = time.monotonic()
