"""SQL for recovery and control: leases and their heartbeat, the sweeper's queries, cancellation,
expiry, reopening failed items (a user's retry and reprocessing) and per-tenant load. Same rule as
jobs.repository: every state change is one compare-and-set UPDATE, so a sweeper racing a worker (or two
sweepers) cannot move a row twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, tuple_, update
from sqlalchemy.orm import Session

from jobs.clock import sql_now
from jobs.models import Item, Job
from jobs.repository import add_event
from jobs.status import ITEM_IN_FLIGHT, ITEM_WAITING, JOB_ACTIVE, JOB_TERMINAL, ItemStatus, JobStatus
from jobs.work import Held

SWEEP_LOCK = 0x766C6D71  # "vlmq": one sweeper at a time, whatever number of beats were started


def _names(states: frozenset[Any]) -> list[str]:
    return [str(x) for x in states]


def lease_until(seconds: float) -> ColumnElement[Any]:
    return sql_now() + timedelta(seconds=seconds)


def renew(s: Session, item_ids: Sequence[uuid.UUID], seconds: float) -> dict[uuid.UUID, str]:
    """Extend the leases of those of ``item_ids`` still in flight; {job id: job status} for their jobs,
    so the heartbeat learns of a cancelled or expired job while the engine is busy."""
    if not item_ids:
        return {}
    stmt = (
        update(Item)
        .where(Item.id.in_(item_ids), Item.status.in_(_names(ITEM_IN_FLIGHT)))
        .values(lease_until=lease_until(seconds))
        .returning(Item.job_id)
        .execution_options(synchronize_session=False)
    )
    job_ids = set(s.scalars(stmt))
    return job_statuses(s, job_ids)


def take_back(s: Session, held: Held, attempts_limit: int) -> list[uuid.UUID]:
    """Units still running under the claims ``held`` ({unit id: the attempts the claim set}) back to
    ready, for the retry of the task that made them: its run failed and could not give them back (the
    database was unreachable), and without this the retry would claim nothing and they would wait for
    their lease to run out and the sweeper (lease + sweep interval: minutes).

    Why the attempts are the claim: every claim adds one and nothing else moves them while a unit
    runs, so a unit at the count its claim set is still under it. One whose lease ran out and that
    another worker claimed has moved on, and is left to that worker; one stored meanwhile (the commit
    went through before the connection broke) is no longer running. A compare-and-set in one statement,
    so a retry delivered twice takes back nothing the second time (the first claimed them again, a new
    count). The one reset, a reopen, needs the unit failed and reopened in between; even then
    complete_units stores one result. A unit whose attempts are spent is left to its lease: the sweeper
    fails it."""
    if not held:
        return []
    stmt = (
        update(Item)
        .where(tuple_(Item.id, Item.attempts).in_(list(held.items())))
        .where(Item.status == str(ItemStatus.RUNNING), Item.attempts < attempts_limit)
        .values(status=str(ItemStatus.READY), lease_until=None, updated_at=sql_now())
        .returning(Item.id, Item.job_id)
        .execution_options(synchronize_session=False)
    )
    rows = list(s.execute(stmt))
    for item_id, job_id in rows:
        add_event(
            s, job_id, "item.status", item_id=item_id, to_status=str(ItemStatus.READY), detail="taken back"
        )
    return [i for i, _ in rows]


def job_statuses(s: Session, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not job_ids:
        return {}
    return {j: st for j, st in s.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids)))}


def lock_tenant(s: Session, tenant: str) -> None:
    """Serialise one tenant's submissions, so two at once cannot both pass the limit check."""
    s.execute(select(func.pg_advisory_xact_lock(func.hashtext("vlmq-tenant:" + tenant))))


def tenant_load(s: Session, tenant: str) -> tuple[int, int]:
    """(unfinished jobs, items in them) of ``tenant``."""
    q = select(func.count(), func.coalesce(func.sum(Job.total_items), 0)).where(
        Job.tenant == tenant, Job.status.not_in(_names(JOB_TERMINAL))
    )
    jobs, items = s.execute(q).one()
    return int(jobs), int(items)


def expired_leases(s: Session, limit: int) -> list[Item]:
    """In-flight items whose worker stopped renewing their lease (killed, stuck, cut off)."""
    q = (
        select(Item)
        .where(Item.lease_until < sql_now(), Item.status.in_(_names(ITEM_IN_FLIGHT)))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(s.scalars(q))


def touch_waiting(s: Session, older_than: float | None, limit: int) -> list[tuple[uuid.UUID, str, str]]:
    """Waiting items of active jobs not touched for ``older_than`` seconds (None: all of them), marked
    touched now; (item id, item status, job priority) for each, to be enqueued again."""
    q = (
        select(Item.id)
        .join(Job, Job.id == Item.job_id)
        .where(Item.status.in_(_names(ITEM_WAITING)), Job.status.in_(_names(JOB_ACTIVE)))
        .limit(limit)
        .with_for_update(of=Item, skip_locked=True)
    )
    if older_than is not None:
        q = q.where(Item.updated_at < sql_now() - timedelta(seconds=older_than))
    stmt = (
        update(Item)
        .where(Item.id.in_(q.scalar_subquery()), Item.status.in_(_names(ITEM_WAITING)))
        .values(updated_at=sql_now())
        .returning(Item.id, Item.status, Item.job_id)
        .execution_options(synchronize_session=False)
    )
    rows = [(item_id, status, job_id) for item_id, status, job_id in s.execute(stmt)]
    priorities = job_priorities(s, {job_id for _, _, job_id in rows})
    return [(item_id, status, priorities[job_id]) for item_id, status, job_id in rows]


def job_priorities(s: Session, job_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not job_ids:
        return {}
    return {j: p for j, p in s.execute(select(Job.id, Job.priority).where(Job.id.in_(job_ids)))}


def idle_active_jobs(s: Session) -> list[uuid.UUID]:
    """Active jobs with no item waiting or in flight: all done, yet not finalized (or never started)."""
    moving = _names(ITEM_WAITING | ITEM_IN_FLIGHT)
    busy = exists().where(Item.job_id == Job.id, Item.status.in_(moving))
    return list(s.scalars(select(Job.id).where(Job.status.in_(_names(JOB_ACTIVE)), ~busy)))


def jobs_in(s: Session, status: JobStatus) -> list[uuid.UUID]:
    return list(s.scalars(select(Job.id).where(Job.status == str(status))))


def jobs_past_expiry(s: Session) -> list[uuid.UUID]:
    q = select(Job.id).where(Job.status.not_in(_names(JOB_TERMINAL)), Job.expires_at < sql_now())
    return list(s.scalars(q))


def set_status(
    s: Session, job_id: uuid.UUID, sources: frozenset[ItemStatus], target: ItemStatus, **values: Any
) -> int:
    """Move every item of the job in one of ``sources`` to ``target``; the number moved."""
    stmt = (
        update(Item)
        .where(Item.job_id == job_id, Item.status.in_(_names(sources)))
        .values(status=str(target), updated_at=sql_now(), lease_until=None, **values)
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    )
    n = len(list(s.scalars(stmt)))
    if n:
        add_event(s, job_id, "items.bulk", to_status=str(target), detail=f"{n} items")
    return n


def reopen_failed(
    s: Session, which: ColumnElement[bool], expiry_seconds: float, detail: str
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The one way out of ``failed``, for a user's retry (jobs.control: ``which`` is a job's items) and a
    reprocessing run (jobs.runs: the items it selected). The failed items among ``which`` go back to
    waiting, attempts and errors cleared: a page to ready (its prepared source back to prepared), a
    source that failed before it was prepared to queued, pages or not (a later page could not be
    rendered; its re-prep keeps the pages made). Their jobs are reopened (``_reopen_jobs``).
    Returns (sources to prepare, pages to infer); ``detail`` goes on the events (who reopened)."""
    units = _reopen(s, which, Item.parent_id.is_not(None), ItemStatus.READY)
    # Prepared sources have a page count (jobs.units.finish_prep); one without never got all its pages.
    unprepared = and_(Item.parent_id.is_(None), Item.page_count.is_(None))
    sources = _reopen(s, which, unprepared, ItemStatus.QUEUED)
    parents = {p for _, _, p in units}
    if parents:
        _reopen(s, Item.id.in_(parents), Item.page_count.is_not(None), ItemStatus.PREPARED)
    _reopen_jobs(s, {j for _, j, _ in units + sources}, expiry_seconds, detail)
    for item_id, job_id, _ in units + sources:
        add_event(
            s, job_id, "item.reopened", item_id=item_id, from_status=str(ItemStatus.FAILED), detail=detail
        )
    return [i for i, _, _ in sources], [i for i, _, _ in units]


def _reopen(
    s: Session, which: ColumnElement[bool], kind: ColumnElement[bool], to: ItemStatus
) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None]]:
    """Failed items of ``which`` and ``kind`` to ``to``, as new: (id, job id, parent id) of each."""
    new = {"attempts": 0, "error_code": None, "error_message": None, "lease_until": None}
    stmt = (
        update(Item)
        .where(which, kind, Item.status == str(ItemStatus.FAILED))
        .values(status=str(to), updated_at=sql_now(), **new)
        .returning(Item.id, Item.job_id, Item.parent_id)
        .execution_options(synchronize_session=False)
    )
    return [(i, j, p) for i, j, p in s.execute(stmt)]


def _reopen_jobs(s: Session, job_ids: set[uuid.UUID], expiry_seconds: float, detail: str) -> None:
    """A finished (not cancelled) job of reopened items runs again: its finalizer settles it and writes
    its output files again. Each such job, finished or still running, gets a full expiry window from
    now, as a new job would: its old window is often over (a nightly run only looks at jobs a day old),
    and the next sweep would end it ``expired`` and fail the items just reopened."""
    if not job_ids:
        return
    finished = _names(frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED}))
    reopened = list(
        s.scalars(
            update(Job)
            .where(Job.id.in_(job_ids), Job.status.in_(finished))
            .values(status=str(JobStatus.RUNNING), completed_at=None, error=None, updated_at=sql_now())
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
    )
    for job_id in reopened:
        add_event(s, job_id, "job.reopened", to_status=str(JobStatus.RUNNING), detail=detail)
    s.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(_names(JOB_ACTIVE)))
        .values(expires_at=lease_until(expiry_seconds), updated_at=sql_now())
        .execution_options(synchronize_session=False)
    )
