"""SQL of leases and recovery: claims' leases and their heartbeat, and the sweeper's queries (expired
leases, idle and expired jobs; jobs.wakes sends word of waiting work again). Same rule as
jobs.repository: every state change is one compare-and-set UPDATE, so a sweeper racing a worker (or two
sweepers) cannot move a row twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.orm import Session

from jobs.clock import sql_now
from jobs.models import Item, Job
from jobs.status import ITEM_IN_FLIGHT, ITEM_WAITING, JOB_ACTIVE, JOB_TERMINAL, JobStatus, names

SWEEP_LOCK = 0x766C6D71  # "vlmq": one sweeper at a time, whatever number of beats were started


def lease_until(seconds: float) -> ColumnElement[Any]:
    return sql_now() + timedelta(seconds=seconds)


def renew(s: Session, item_ids: Sequence[uuid.UUID], seconds: float) -> dict[uuid.UUID, str]:
    """Extend the leases of those of ``item_ids`` still in flight; {job id: job status} for their jobs,
    so the heartbeat learns of a cancelled or expired job while the engine is busy."""
    if not item_ids:
        return {}
    stmt = (
        update(Item)
        .where(Item.id.in_(item_ids), Item.status.in_(names(ITEM_IN_FLIGHT)))
        .values(lease_until=lease_until(seconds))
        .returning(Item.job_id)
        .execution_options(synchronize_session=False)
    )
    job_ids = set(s.scalars(stmt))
    return job_statuses(s, job_ids)


def job_statuses(s: Session, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not job_ids:
        return {}
    return {j: st for j, st in s.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids)))}


def expired_leases(s: Session, limit: int) -> list[Item]:
    """In-flight items whose worker stopped renewing their lease (killed, stuck, cut off)."""
    q = (
        select(Item)
        .where(Item.lease_until < sql_now(), Item.status.in_(names(ITEM_IN_FLIGHT)))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(s.scalars(q))


def job_priorities(s: Session, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not job_ids:
        return {}
    return {j: p for j, p in s.execute(select(Job.id, Job.priority).where(Job.id.in_(job_ids)))}


def idle_active_jobs(s: Session) -> list[uuid.UUID]:
    """Active jobs with no item waiting or in flight: all done, yet not finalized (or never started)."""
    moving = names(ITEM_WAITING | ITEM_IN_FLIGHT)
    busy = exists().where(Item.job_id == Job.id, Item.status.in_(moving))
    return list(s.scalars(select(Job.id).where(Job.status.in_(names(JOB_ACTIVE)), ~busy)))


def jobs_in(s: Session, status: JobStatus) -> list[uuid.UUID]:
    return list(s.scalars(select(Job.id).where(Job.status == str(status))))


def jobs_past_expiry(s: Session) -> list[uuid.UUID]:
    q = select(Job.id).where(Job.status.not_in(names(JOB_TERMINAL)), Job.expires_at < sql_now())
    return list(s.scalars(q))
