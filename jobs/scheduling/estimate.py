"""When a job will start and finish (``GET /v1/jobs/{id}``'s ``forecast``, ``vlmq watch``).

The model follows how work is claimed (jobs.scheduling.fairness): the fleet's pace, pages ended per
second over the last ``WINDOW_S`` seconds, is split as the claims split it. Normal work is served before
low, so a low job waits until the normal class's open pages are done at that pace. Inside its class a job
gets its tenant's weight over the weights of the class's tenants with open work, split evenly over that
tenant's jobs with open work.

It is an estimate at today's mix, not a promise: it assumes the pace holds and the mix stays (tenant caps
are not modelled), so a job's finish comes earlier as other jobs end, and later as new jobs arrive. A
source not yet prepared counts as one page because its pages are unknown until prep splits it: the
forecast grows as prep discovers pages.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs import clock, tallies
from jobs.config import Settings
from jobs.models import Item, Job
from jobs.scheduling.fairness import CLASSES
from jobs.schemas import Counts, ForecastOut
from jobs.status import EXPIRED_CODE, JOB_ACTIVE, ItemStatus, names

WINDOW_S = 600  # seconds of ended pages the fleet's pace is measured over
_ENDED = [str(ItemStatus.SUCCEEDED), str(ItemStatus.FAILED)]
_UNPREPARED = [str(ItemStatus.QUEUED), str(ItemStatus.PREPARING)]


@dataclass(frozen=True)
class Load:
    """An active job's open work: pages waiting or in flight, and sources not yet split into pages."""

    job_id: uuid.UUID
    tenant: str
    priority: str
    pages: int
    unprepared: int

    @property
    def work(self) -> int:
        """Pages still to run, an unprepared source counted as one page."""
        return self.pages + self.unprepared


def forecast(s: Session, job: Job, settings: Settings, units: Counts) -> ForecastOut | None:
    """The job's start and finish at its share of the fleet's pace. None when it will not run any more
    (finished, cancelling, expired) or when no page ended in the last ``WINDOW_S`` s: no pace to go by.
    ``units``: the job's page counts (jobs.repository.counts), so that forecast and bar count alike."""
    pace = fleet_pace(s) if job.status in names(JOB_ACTIVE) else 0.0
    if pace == 0:
        return None
    loads, now = active_loads(s), clock.now(s)
    rate = pace * share(loads, job, settings.fairness.weight)
    wait = sum(x.work for x in loads if _rank(x.priority) < _rank(job.priority)) / pace
    unprepared = next((x.unprepared for x in loads if x.job_id == job.id), 0)
    left = max(units.total - units.finished, 0) + unprepared
    return ForecastOut(
        starts_at=job.started_at or now + timedelta(seconds=wait),
        finishes_at=now + timedelta(seconds=wait + left / rate),
        pages_per_second=rate,
    )


def fleet_pace(s: Session) -> float:
    """Pages per second that ended over the last ``WINDOW_S`` s, every job's: the status and updated_at
    index (ix_items_status_updated_at) reads only those. Pages failed by their job's expiry are left out:
    a job expiring fails its open pages at once, which is no measure of how fast pages run."""
    q = select(func.count()).where(
        Item.status.in_(_ENDED),
        Item.updated_at > clock.sql_now() - timedelta(seconds=WINDOW_S),
        Item.parent_id.is_not(None),
        Item.error_code.is_distinct_from(EXPIRED_CODE),
    )
    return int(s.scalar(q) or 0) / WINDOW_S


def active_loads(s: Session) -> list[Load]:
    """Every active job with open work, in one query grouped by job, from the counts Postgres keeps
    (jobs.tallies): a few rows a job, never the open items of a job of a million."""
    loads: dict[uuid.UUID, Load] = {}
    for job_id, tenant, priority, status, n in tallies.active_open(s):
        load = loads.get(job_id) or Load(job_id, tenant, priority, 0, 0)
        if status in _UNPREPARED:
            loads[job_id] = replace(load, unprepared=load.unprepared + n)
        else:
            loads[job_id] = replace(load, pages=load.pages + n)
    return list(loads.values())


def share(loads: Sequence[Load], job: Job, weight: Callable[[str], float]) -> float:
    """The job's fraction of the fleet's pace once its class is served: its tenant's weight over the
    weights of the class's tenants with open work, split evenly over that tenant's jobs with open work
    (the job itself counted either way, so that a job with nothing left still gets a share)."""
    peers = [x for x in loads if x.priority == job.priority and x.work > 0]
    tenants = {x.tenant for x in peers} | {job.tenant}
    jobs = {x.job_id for x in peers if x.tenant == job.tenant} | {job.id}
    return weight(job.tenant) / sum(weight(t) for t in tenants) / len(jobs)


def _rank(priority: str) -> int:
    """The claim order's class (jobs.scheduling.fairness): a class runs once those before it are done."""
    return CLASSES.get(priority, len(CLASSES))
