"""The soak's hand on the system's clock (jobs.clock): read the simulated now, move it forward.

Every process of the system reads its "now" from Postgres' vlmq_now() (or follows its offset), so moving
the offset moves the whole stack. Where jobs.clock is missing (a checkout from before the seam), the
clock stands still and the run says so.
"""

from __future__ import annotations

import importlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from jobs.config import get_settings

log = logging.getLogger(__name__)


def _seam() -> ModuleType | None:
    """jobs.clock of this checkout (an editable install may find another checkout's for a name this one
    lacks: that one does not count)."""
    import jobs

    try:
        seam = importlib.import_module("jobs.clock")
    except ImportError:
        return None
    mine = Path(jobs.__file__).resolve().parent
    return seam if Path(seam.__file__ or "").resolve().parent == mine else None


class SimClock:
    def __init__(self, db_url: str) -> None:
        # NullPool: a connection per call, so a Postgres restart leaves no dead connection behind.
        self.engine = create_engine(db_url, poolclass=NullPool)
        self.seam = _seam()
        get_settings.cache_clear()  # jobs.clock.advance reads VLMQ_CLOCK__SIMULATED (tests.soak.system)
        self.moved = 0.0  # simulated seconds moved by this run
        self.largest = 0.0  # the largest single move

    @property
    def simulated(self) -> bool:
        return self.seam is not None

    def now(self) -> datetime | None:
        """The system's now; None while Postgres is down."""
        try:
            with Session(self.engine) as s:
                if self.seam is not None:
                    now: datetime = self.seam.now(s)
                    return now
                real: datetime = s.scalar(text("SELECT now()"))
                return real + timedelta(seconds=self.moved)
        except SQLAlchemyError:
            return None

    def advance(self, seconds: float) -> datetime | None:
        """Move every process's now forward by ``seconds``; None (nothing moved) while Postgres is down.
        Without the seam only this process's idea of the time moves (the run still ends)."""
        if self.seam is None:
            now = self.now()
            if now is None:
                return None
            self.moved += seconds
            return now + timedelta(seconds=seconds)
        try:
            with Session(self.engine) as s, s.begin():
                now: datetime = self.seam.advance(s, get_settings(), seconds)
        except SQLAlchemyError:
            return None
        self.moved += seconds
        self.largest = max(self.largest, seconds)
        return now

    def to_hour(self, hour: int) -> datetime | None:
        """Forward to the next ``hour``:00 UTC, so that every run crosses its midnights at the same
        points of its workload."""
        now = self.now()
        if now is None:
            return None
        target = now.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
        if target <= now:
            target += timedelta(days=1)
        return self.advance((target - now).total_seconds())

    def close(self) -> None:
        self.engine.dispose()


def midnights(start: datetime, end: datetime) -> int:
    """UTC midnights crossed between ``start`` and ``end``."""
    return (end.astimezone(UTC).date() - start.astimezone(UTC).date()).days


def aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
