"""A job's items counted without reading them: the rows that triggers on items write (migration 0014,
model ItemTally), one per (job, source or unit, status, error code) a statement changed, with how many
items it moved in (n > 0) or out (n < 0). A count is the sum of a job's rows; the sweeper rolls each
busy job's rows up into one a group, so a count reads a handful of rows at any size of job.

Written by Postgres in the transaction that moves the items: a reader sees the items and their count
together, and nothing in Python can forget to count (a status change anywhere, a raw UPDATE in a test).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jobs.models import ItemTally, Job
from jobs.status import ITEM_IN_FLIGHT, ITEM_WAITING, JOB_ACTIVE, names

ROLL_UP_ABOVE = 64  # rows a job may gather before the sweeper rolls them up (a read sums them meanwhile)


def by_status(
    s: Session, job_ids: Sequence[uuid.UUID], sources: bool | None
) -> list[tuple[uuid.UUID, bool, str, str | None, int]]:
    """(job, source?, status, error code, how many) of each group that has items, for these jobs'
    sources (True), units (False) or both (None)."""
    t = ItemTally
    q = select(t.job_id, t.source, t.status, t.error_code, func.sum(t.n)).where(t.job_id.in_(list(job_ids)))
    if sources is not None:
        q = q.where(t.source.is_(sources))
    q = q.group_by(t.job_id, t.source, t.status, t.error_code).having(func.sum(t.n) != 0)
    return [(j, src, st, code, int(n)) for j, src, st, code, n in s.execute(q)] if job_ids else []


def active_open(s: Session) -> list[tuple[uuid.UUID, str, str, str, int]]:
    """(job, tenant, priority, status, how many) of every active job's open items, waiting or in flight,
    a row a status: the fleet's open work in one query of a few rows a job (the forecast's loads and
    the sweeper's wakes read it)."""
    t = ItemTally
    q = (
        select(t.job_id, Job.tenant, Job.priority, t.status, func.sum(t.n))
        .join(Job, Job.id == t.job_id)
        .where(Job.status.in_(names(JOB_ACTIVE)), t.status.in_(names(ITEM_WAITING | ITEM_IN_FLIGHT)))
        .group_by(t.job_id, Job.tenant, Job.priority, t.status)
        .having(func.sum(t.n) != 0)
    )
    return [(j, tenant, priority, st, int(n)) for j, tenant, priority, st, n in s.execute(q)]


# Deleted and written again as sums in one statement: rows a trigger adds meanwhile are not in the
# DELETE's snapshot and stay; a second roll-up at once waits on the rows' locks, then finds them gone.
_ROLL_UP = text("""
WITH gone AS (DELETE FROM item_tallies WHERE job_id = ANY(:jobs) RETURNING *)
INSERT INTO item_tallies (job_id, source, status, error_code, n)
SELECT job_id, source, status, error_code, sum(n) FROM gone
GROUP BY job_id, source, status, error_code HAVING sum(n) <> 0
""")


def roll_up(s: Session, job_ids: Sequence[uuid.UUID]) -> None:
    """These jobs' rows replaced by one a group with the same sums (zero sums dropped)."""
    if job_ids:
        s.execute(_ROLL_UP, {"jobs": list(job_ids)})


def crowded(s: Session, limit: int, above: int = ROLL_UP_ABOVE) -> list[uuid.UUID]:
    """Up to ``limit`` jobs with more than ``above`` rows: the sweeper's roll-up work."""
    q = select(ItemTally.job_id).group_by(ItemTally.job_id).having(func.count() > above).limit(limit)
    return list(s.scalars(q))
