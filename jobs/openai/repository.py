"""SQL for the OpenAI-style files and batches, and the job listing of the results page.

Kept apart from jobs.repository (the job/item state machine) so the two grow without touching each
other; the same habit holds: every batch state change is one compare-and-set UPDATE.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from jobs.clock import sql_now
from jobs.models import Batch, File


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
