"""The SQL side of steering a whole job: cancel, retry, expire, per-tenant limits, and stopping the items
of a job that stopped. Each step runs in the caller's transaction and returns what the caller does next
(finalize, enqueue): ``JobService.cancel`` / ``retry`` / ``stop_items`` and the sweeper are the callers.
It takes a session, not the service, so no import circle ties the two."""

from __future__ import annotations

import uuid

from sqlalchemy import case, exists, func, select
from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs import transitions
from jobs.config import Settings
from jobs.errors import Conflict, Expired, NotFound, TenantLimitExceeded
from jobs.models import Item, Job, Listing
from jobs.status import (
    ITEM_IN_FLIGHT,
    ITEM_WAITING,
    JOB_TERMINAL,
    ItemStatus,
    JobStatus,
    job_sources_for,
    names,
)


def check_tenant(s: Session, settings: Settings, tenant: str, new_items: int) -> None:
    """Raise TenantLimitExceeded (HTTP 429) when this job would take the tenant over its limits.
    Holds a per-tenant lock to the end of the transaction, so concurrent submissions queue up here."""
    lim = settings.limits
    lock_tenant(s, tenant)
    jobs, items = tenant_load(s, tenant)
    if jobs + 1 > lim.max_active_jobs_per_tenant:
        raise TenantLimitExceeded(
            f"tenant {tenant!r} has {jobs} unfinished jobs; the limit is {lim.max_active_jobs_per_tenant}. "
            "Submit again once one finishes, or cancel one."
        )
    if items + new_items > lim.max_active_items_per_tenant:
        raise TenantLimitExceeded(
            f"tenant {tenant!r} has {items} items in unfinished jobs and this job adds {new_items}; the "
            f"limit is {lim.max_active_items_per_tenant}. Submit again once some finish."
        )


def cancel(s: Session, tenant: str | None, job_id: uuid.UUID) -> None:
    """The job to cancelling and its waiting items cancelled; the caller finalizes (nothing in flight:
    cancelled now; else the last worker, or the sweeper, ends it).

    The items first, then the job's row: the order every transaction takes them in (jobs.transitions).
    A prep claim locks its source, then moves the job from queued to running; a cancel that took the job
    row first and then waited on that source deadlocked with it, and Postgres aborted the cancel (CI: a
    cancel right after a 10,000-item submit answered 503). The waiting items are cancelled twice: before
    the job's row, and again once it is held (see below)."""
    job = repo.get_job(s, job_id, tenant)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.status in job_sources_for(JobStatus.CANCELLING):
        transitions.set_status(s, job_id, ITEM_WAITING, ItemStatus.CANCELLED)
        if transitions.move_job(s, job_id, JobStatus.CANCELLING):
            # Again, now that the job's row is held: prep records a chunk of pages under a share lock on
            # it (jobs.units), so a chunk committed while the first pass ran, unseen by it, was ready
            # pages of a cancelling job that nothing would claim or cancel until a sweep (the e2e
            # system runs no beat: a batch stayed cancelling). Any later chunk sees the job stopped.
            transitions.set_status(s, job_id, ITEM_WAITING, ItemStatus.CANCELLED)


def settle_cancelling(s: Session, job_id: uuid.UUID) -> None:
    """The sweeper's pass over a cancelling job: waiting items that appeared since (a prep that finished
    meanwhile) are cancelled; then the caller finalizes."""
    transitions.set_status(s, job_id, ITEM_WAITING, ItemStatus.CANCELLED)


def retry(
    s: Session, tenant: str | None, job_id: uuid.UUID, expiry_seconds: float
) -> tuple[str, list[uuid.UUID], list[uuid.UUID]]:
    """The job's failed items reopened: (its priority, sources to prepare, units to infer) to enqueue."""
    job = repo.get_job(s, job_id, tenant)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        raise Conflict(f"job {job_id} is {job.status}; a cancelled job cannot be retried")
    sources, units = transitions.reopen_failed(s, Item.job_id == job_id, expiry_seconds, "retry")
    if not sources and not units:
        raise Conflict(f"job {job_id} has no failed items to retry")
    return job.priority, sources, units


def expire(s: Session, job_id: uuid.UUID) -> bool:
    """Past its expiry: every open item fails with code ``expired``; True when the caller is to close the
    job ``expired`` (its output files written with what finished). In-flight workers find out at their
    next check."""
    job = repo.get_job(s, job_id)
    if job is None or repo.job_is_terminal(job):
        return False
    msg = "the job passed its expiry time before this item finished"
    transitions.set_status(
        s,
        job_id,
        ITEM_WAITING | ITEM_IN_FLIGHT,
        ItemStatus.FAILED,
        error_code=Expired.code,
        error_message=msg,
    )
    transitions.settle_sources(s, job_id)
    return True


def lock_tenant(s: Session, tenant: str) -> None:
    """Serialise one tenant's submissions, so two at once cannot both pass the limit check."""
    s.execute(select(func.pg_advisory_xact_lock(func.hashtext("vlmq-tenant:" + tenant))))


def tenant_load(s: Session, tenant: str) -> tuple[int, int]:
    """(unfinished jobs, items in them) of ``tenant``. The items of a job submitted as a source are not
    counted: its listing paces itself (``listing.max_open_items``), and a corpus of millions must not
    keep its tenant from submitting anything else."""
    listed = exists().where(Listing.job_id == Job.id)
    items = func.coalesce(func.sum(case((listed, 0), else_=Job.total_items)), 0)
    q = select(func.count(), items).where(Job.tenant == tenant, Job.status.not_in(names(JOB_TERMINAL)))
    jobs, items = s.execute(q).one()
    return int(jobs), int(items)
