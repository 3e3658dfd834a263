"""Read models for the results page: a tenant's jobs with their progress, a job's pages with their
image, answer, reasoning or error. Reads only; tenancy is checked on every call."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from jobs import repository as repo
from jobs.errors import InvalidInput, NotFound
from jobs.models import Item, Result
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


@dataclass(frozen=True)
class Pager:
    """Cursors of the pages beside this one (None: no such page), for ``?after=`` and ``?before=``."""

    previous: str | None
    next: str | None


def pages(
    service: JobService, tenant: str, job_id: uuid.UUID, limit: int, after: str | None, before: str | None
) -> tuple[JobOut, list[PageRow], Pager]:
    """(the job, one page of its rows by keyset from the cursor ``after`` or ``before``, the pager)."""
    job = service.get(tenant, job_id)  # NotFound for another tenant's job
    at_after, at_before = _key(after), _key(before)
    with service.sessions() as s:
        rows, more = repo.result_rows_from(s, job_id, limit, at_after, at_before)
    keys = [key for _, key in rows]
    if at_before is not None:
        pager = Pager(cursor(keys[0]) if more and keys else None, cursor(keys[-1] if keys else at_before))
    else:
        earlier = None if at_after is None else cursor(keys[0] if keys else at_after)
        pager = Pager(earlier, cursor(keys[-1]) if more else None)
    return job, [_page_row(src, unit, res) for (src, unit, res), _ in rows], pager


def _page_row(src: Item, unit: Item | None, res: Result | None) -> PageRow:
    owner = unit or src
    error = lines.item_error(owner)
    return PageRow(
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


def cursor(key: repo.LineKey) -> str:
    """A line's place as an opaque URL-safe string. It only positions a page inside the job the URL
    names, whose owner is checked: a forged cursor can move within one's own job, nowhere else."""
    created, custom_id, src, tail, page = key
    raw = json.dumps([created.isoformat(), custom_id, str(src), tail, page], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _key(text: str | None) -> repo.LineKey | None:
    if text is None:
        return None
    try:
        created, custom_id, src, tail, page = json.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        )
        return datetime.fromisoformat(created), str(custom_id), uuid.UUID(src), int(tail), int(page)
    except (ValueError, TypeError) as e:  # binascii.Error and JSONDecodeError are ValueErrors
        raise InvalidInput(f"not a results cursor: {text[:40]!r}") from e


def page_media(service: JobService, tenant: str, job_id: uuid.UUID, unit_id: uuid.UUID) -> tuple[str, bytes]:
    """(the unit's media key, its bytes): a page's PNG, or a video's clip that the page must draw."""
    service.check_owner(tenant, job_id)  # NotFound for another tenant's job
    with service.sessions() as s:
        unit = queries.unit_in_job(s, job_id, unit_id)
    if unit is None or not unit.media_key:
        raise NotFound(f"page {unit_id} not found in job {job_id}")
    return unit.media_key, service.store.get(unit.media_key)
