"""Read models for the results page: a tenant's jobs with their progress, a job's pages with their
image, answer, reasoning or error. Reads only; tenancy is checked on every call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from jobs import repository as repo
from jobs.errors import NotFound
from jobs.schemas import Counts, JobOut
from jobs.service import JobService
from jobs.status import outcome
from jobs.views import lines, queries


@dataclass(frozen=True)
class JobRow:
    id: uuid.UUID
    status: str
    created_at: datetime
    pages: Counts  # the job's page_counts, from the same query as GET /v1/jobs/{id}

    @property
    def percent(self) -> int:
        return round(100 * self.pages.finished / self.pages.total) if self.pages.total else 0


@dataclass(frozen=True)
class PageRow:
    custom_id: str
    page: int | None
    status: str
    unit_id: uuid.UUID | None  # set when the page has a rendered image
    answer: str | None
    reasoning: str | None
    flags: list[str]
    error_code: str | None
    error_message: str | None


def jobs(service: JobService, tenant: str, limit: int, offset: int) -> list[JobRow]:
    with service.sessions() as s:
        rows = queries.list_jobs(s, tenant, limit, offset)
        counts = repo.outcome_counts(s, [job.id for job in rows], sources=False)
    return [JobRow(job.id, job.status, job.created_at, counts[job.id]) for job in rows]


def pages(
    service: JobService, tenant: str, job_id: uuid.UUID, limit: int, offset: int
) -> tuple[JobOut, list[PageRow], int]:
    """(the job, one page of its rows, how many rows it has in all)."""
    job = service.get(tenant, job_id)  # NotFound for another tenant's job
    with service.sessions() as s:
        rows, total = repo.result_rows_page(s, job_id, limit, offset)
    out = []
    for src, unit, res in rows:
        owner = unit or src
        error = lines.item_error(owner)
        out.append(
            PageRow(
                custom_id=src.custom_id,
                page=unit.page if unit else None,
                status=outcome(owner.status, owner.error_code),
                unit_id=unit.id if unit is not None and unit.media_key else None,
                answer=res.answer if res else None,
                reasoning=res.reasoning if res else None,
                flags=list(res.flags) if res else [],
                error_code=error.code if error else None,
                error_message=error.message if error else None,
            )
        )
    return job, out, total


def page_media(service: JobService, tenant: str, job_id: uuid.UUID, unit_id: uuid.UUID) -> tuple[str, bytes]:
    """(the unit's media key, its bytes): a page's PNG, or a video's clip that the page must draw."""
    service.check_owner(tenant, job_id)  # NotFound for another tenant's job
    with service.sessions() as s:
        unit = queries.unit_in_job(s, job_id, unit_id)
    if unit is None or not unit.media_key:
        raise NotFound(f"page {unit_id} not found in job {job_id}")
    return unit.media_key, service.store.get(unit.media_key)
