"""SQL of the read-only views beside the API's job routes: the results page's job list and a page's unit,
and the state /metrics reads at scrape time."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.models import OPEN_ITEM_STATES, Item, Job


def list_jobs(s: Session, tenant: str, limit: int, offset: int) -> list[Job]:
    """The tenant's newest jobs (their counts: jobs.repository.outcome_counts, as every view's)."""
    q = select(Job).where(Job.tenant == tenant).order_by(Job.created_at.desc(), Job.id)
    return list(s.scalars(q.limit(limit).offset(offset)))


def unit_in_job(s: Session, job_id: uuid.UUID, item_id: uuid.UUID) -> Item | None:
    return s.scalar(select(Item).where(Item.id == item_id, Item.job_id == job_id))


def open_items_by_status(s: Session) -> dict[str, int]:
    """Items still moving, by status: an index-only count on the partial index ix_items_open_status."""
    q = select(Item.status, func.count()).where(Item.status.in_(OPEN_ITEM_STATES)).group_by(Item.status)
    found = {status: int(n) for status, n in s.execute(q)}
    return {st: found.get(st, 0) for st in OPEN_ITEM_STATES}


def jobs_by_status(s: Session) -> dict[str, int]:
    q = select(Job.status, func.count()).group_by(Job.status)
    return {status: int(n) for status, n in s.execute(q)}
