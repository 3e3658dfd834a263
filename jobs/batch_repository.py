"""SQL for the OpenAI-style files and batches, and the job listing of the results page.

Kept apart from jobs.repository (the job/item state machine) so the two grow without touching each
other; the same habit holds: every batch state change is one compare-and-set UPDATE.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from jobs.clock import sql_now
from jobs.models import OPEN_ITEM_STATES, Batch, File, Item, Job


def insert_file(s: Session, values: dict[str, Any]) -> None:
    """Idempotent on the id: a rewritten output file keeps its row."""
    s.execute(insert(File).values(**values).on_conflict_do_nothing(index_elements=["id"]))


def get_file(s: Session, tenant: str, file_id: str) -> File | None:
    return s.scalar(select(File).where(File.id == file_id, File.tenant == tenant, File.deleted_at.is_(None)))


def list_files(
    s: Session, tenant: str, purpose: str | None, after: str | None, limit: int, newest_first: bool
) -> list[File]:
    """The tenant's files in creation order (newest first by default); ``after`` is the last id of the
    previous page (a cursor, as OpenAI's)."""
    q = select(File).where(File.tenant == tenant, File.deleted_at.is_(None))
    if purpose:
        q = q.where(File.purpose == purpose)
    key = tuple_(File.created_at, File.id)
    if after:
        row = s.execute(
            select(File.created_at, File.id).where(File.id == after, File.tenant == tenant)
        ).first()
        if row is not None:
            at = tuple_(row.created_at, row.id)
            q = q.where(key < at if newest_first else key > at)
    order = (File.created_at.desc(), File.id.desc()) if newest_first else (File.created_at, File.id)
    return list(s.scalars(q.order_by(*order).limit(limit)))


def delete_file(s: Session, tenant: str, file_id: str) -> str | None:
    """Mark the tenant's file deleted; its S3 key, or None when there is no such file."""
    stmt = (
        update(File)
        .where(File.id == file_id, File.tenant == tenant, File.deleted_at.is_(None))
        .values(deleted_at=sql_now())
        .returning(File.key)
    )
    return s.scalar(stmt)


def get_batch(s: Session, tenant: str | None, batch_id: str) -> Batch | None:
    q = select(Batch).where(Batch.id == batch_id)
    if tenant is not None:
        q = q.where(Batch.tenant == tenant)
    return s.scalar(q)


def list_batches(s: Session, tenant: str, after: str | None, limit: int) -> list[Batch]:
    """Newest first; ``after`` is the last id of the previous page (a cursor, as OpenAI's)."""
    q = select(Batch).where(Batch.tenant == tenant)
    if after:
        cursor = select(Batch.created_at, Batch.id).where(Batch.id == after, Batch.tenant == tenant)
        row = s.execute(cursor).first()
        if row is not None:
            q = q.where(tuple_(Batch.created_at, Batch.id) < tuple_(row.created_at, row.id))
    return list(s.scalars(q.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)))


def move_batch(
    s: Session, batch_id: str, sources: Sequence[str], target: str, values: dict[str, Any] | None = None
) -> bool:
    """Compare-and-set on the batch status; True when this call moved it."""
    stmt = (
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(list(sources)))
        .values(status=target, updated_at=sql_now(), **(values or {}))
        .returning(Batch.id)
        .execution_options(synchronize_session=False)
    )
    return s.scalar(stmt) is not None


def stale_finalizing(s: Session, batch_id: str, older_than: timedelta) -> bool:
    """Take over a finalization untouched for ``older_than`` (its process died): same files, same ids,
    so redoing it is safe."""
    stmt = (
        update(Batch)
        .where(
            Batch.id == batch_id, Batch.status == "finalizing", Batch.finalizing_at < sql_now() - older_than
        )
        .values(finalizing_at=sql_now(), updated_at=sql_now())
        .returning(Batch.id)
        .execution_options(synchronize_session=False)
    )
    return s.scalar(stmt) is not None


# -- the results page --------------------------------------------------------------------------------


def list_jobs(s: Session, tenant: str, limit: int, offset: int) -> list[tuple[Job, dict[str, int]]]:
    """The tenant's newest jobs with their page counts by status (units; a job not yet split: none)."""
    jobs = list(
        s.scalars(
            select(Job)
            .where(Job.tenant == tenant)
            .order_by(Job.created_at.desc(), Job.id)
            .limit(limit)
            .offset(offset)
        )
    )
    counts: dict[uuid.UUID, dict[str, int]] = {j.id: {} for j in jobs}
    if jobs:
        q = (
            select(Item.job_id, Item.status, func.count())
            .where(Item.job_id.in_(list(counts)), Item.parent_id.is_not(None))
            .group_by(Item.job_id, Item.status)
        )
        for job_id, status, n in s.execute(q):
            counts[job_id][status] = int(n)
    return [(j, counts[j.id]) for j in jobs]


def unit_in_job(s: Session, job_id: uuid.UUID, item_id: uuid.UUID) -> Item | None:
    return s.scalar(select(Item).where(Item.id == item_id, Item.job_id == job_id))


# -- /metrics ----------------------------------------------------------------------------------------


def open_items_by_status(s: Session) -> dict[str, int]:
    """Items still moving, by status: an index-only count on the partial index ix_items_open_status."""
    q = select(Item.status, func.count()).where(Item.status.in_(OPEN_ITEM_STATES)).group_by(Item.status)
    found = {status: int(n) for status, n in s.execute(q)}
    return {st: found.get(st, 0) for st in OPEN_ITEM_STATES}


def jobs_by_status(s: Session) -> dict[str, int]:
    q = select(Job.status, func.count()).group_by(Job.status)
    return {status: int(n) for status, n in s.execute(q)}
