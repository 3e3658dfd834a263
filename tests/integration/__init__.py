import uuid
from datetime import datetime

from sqlalchemy import func, select, text

from jobs.config import Settings
from jobs.service import JobService


def with_limits(settings: Settings, **limits: int) -> Settings:
    """``settings`` with some of its ``limits`` (``VLMQ_LIMITS__*``) changed, for an app built in a test."""
    return settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})


def age_job(service: JobService, job_id: uuid.UUID, days: int = 2) -> None:
    """As if the job was submitted ``days`` ago: its expiry window (one day by default) is over. Expiry is
    compared with Postgres' now(), so the job's times move, not the clock."""
    with service.sessions() as s, s.begin():
        s.execute(
            text(
                "UPDATE jobs SET created_at = created_at - make_interval(days => :d),"
                " expires_at = expires_at - make_interval(days => :d) WHERE id = :j"
            ),
            {"d": days, "j": job_id},
        )


def db_now(service: JobService) -> datetime:
    """Postgres' now(): the clock expiry windows are measured by."""
    with service.sessions() as s:
        now = s.scalar(select(func.now()))
    assert now is not None
    return now
