"""Use cases that steer a whole job: cancel, retry, expire, per-tenant limits, and stopping the items of
a job that stopped. ``JobService.cancel`` / ``JobService.retry`` are the public entry points."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from jobs import leases
from jobs import repository as repo
from jobs.config import Settings
from jobs.errors import Conflict, Expired, NotFound, TenantLimitExceeded
from jobs.models import Item
from jobs.schemas import JobOut
from jobs.status import ITEM_IN_FLIGHT, ITEM_WAITING, JOB_ACTIVE, ItemStatus, JobStatus

if TYPE_CHECKING:
    from jobs.service import JobService


def check_tenant(s: Session, settings: Settings, tenant: str, new_items: int) -> None:
    """Raise TenantLimitExceeded (HTTP 429) when this job would take the tenant over its limits.
    Holds a per-tenant lock to the end of the transaction, so concurrent submissions queue up here."""
    lim = settings.limits
    leases.lock_tenant(s, tenant)
    jobs, items = leases.tenant_load(s, tenant)
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


def cancel(service: JobService, tenant: str | None, job_id: uuid.UUID) -> JobOut:
    with service.sessions() as s, s.begin():
        if repo.get_job(s, job_id, tenant) is None:
            raise NotFound(f"job {job_id} not found")
        if repo.move_job(s, job_id, JobStatus.CANCELLING):
            leases.set_status(s, job_id, ITEM_WAITING, ItemStatus.CANCELLED)
    service.finalize(job_id)  # nothing in flight: cancelled now; else the last worker (or sweeper) ends it
    return service.get(tenant, job_id)


def settle_cancelling(service: JobService, job_id: uuid.UUID) -> None:
    """The sweeper's pass over a cancelling job: waiting items that appeared since (a prep that finished
    meanwhile) are cancelled, so are in-flight items whose worker is gone; then finalize."""
    with service.sessions() as s, s.begin():
        leases.set_status(s, job_id, ITEM_WAITING, ItemStatus.CANCELLED)
    service.finalize(job_id)


def retry(service: JobService, tenant: str | None, job_id: uuid.UUID) -> JobOut:
    with service.sessions() as s, s.begin():
        job = repo.get_job(s, job_id, tenant)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
            raise Conflict(f"job {job_id} is {job.status}; a cancelled job cannot be retried")
        expiry = service.settings.queue.job_expiry_seconds
        sources, units = leases.reopen_failed(s, Item.job_id == job_id, expiry, "retry")
        if not sources and not units:
            raise Conflict(f"job {job_id} has no failed items to retry")
        priority = job.priority
    service.enqueue(priority, sources=sources, units=units)
    return service.get(tenant, job_id)


def expire(service: JobService, job_id: uuid.UUID) -> bool:
    """Past its expiry: every open item fails with code ``expired`` and the job ends ``expired``, its
    output files written with what finished. In-flight workers find out at their next check."""
    msg = "the job passed its expiry time before this item finished"
    with service.sessions() as s, s.begin():
        job = repo.get_job(s, job_id)
        if job is None or repo.job_is_terminal(job):
            return False
        leases.set_status(
            s,
            job_id,
            ITEM_WAITING | ITEM_IN_FLIGHT,
            ItemStatus.FAILED,
            error_code=Expired.code,
            error_message=msg,
        )
        repo.settle_sources(s, job_id)
    return service.close_job(job_id, JobStatus.EXPIRED)


def stop_items(service: JobService, item_ids: Sequence[uuid.UUID], job_id: uuid.UUID) -> bool:
    status = service.job_statuses({job_id}).get(job_id)
    if status in JOB_ACTIVE:
        return False
    if status == JobStatus.EXPIRED:
        service.fail_items(item_ids, Expired("the job expired before this item finished"))
    else:
        with service.sessions() as s, s.begin():
            repo.move_items(s, item_ids, ItemStatus.CANCELLED)
    return True
