"""Who is served next: the order in which waiting work is claimed, decided in Postgres at the claim.

A message on the ``prep`` or ``gpu`` queue is word that work is waiting; the worker that takes it claims
whatever is next in turn, not the ids the message was sent with. Redis' arrival order then decides
nothing, and a small job submitted behind a bulk job's thousands of messages is served at the next claim.

The turn, for sources (prep) and units (inference) alike:

1. the priority class: normal before low (the nightly reprocess and low-priority jobs);
2. inside a class, the tenant with the least work in flight for its weight
   (``Settings.fairness.tenant_weights``, 1 by default): weights 3 and 1 keep 3:1 in flight while both
   have work waiting;
3. inside a tenant, its job with the least work in flight (round robin over its jobs), then the oldest.

A claim of n units is handed out one at a time in that order, each counted in flight at once, so one
claim may take pages of several jobs. Nothing starves: a bulk job with work in flight is still served
whenever its in-flight count is the lowest, so a stream of small jobs slows it but never stops it.
``max_units_in_flight_per_tenant`` / ``max_sources_preparing_per_tenant`` cap one tenant; a claim that
found only capped work waiting says so (``Claimed.capped``), and its task looks again later.

Claims of one kind are serialized by a transaction-level advisory lock: each sees the in-flight counts
the one before it left, so the turn is exact and caps hold across a fleet. A claim is a few
milliseconds; a fleet makes tens a second. The rows are still moved by compare-and-set
(jobs.transitions), as every status change is.
"""

from __future__ import annotations

import heapq
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.orm import Session

from jobs.clock import sql_now
from jobs.config import FairnessSettings
from jobs.models import Item, Job
from jobs.status import JOB_ACTIVE, ItemStatus, names

CLASSES = {"normal": 0, "low": 1}
# Engine priority (vLLM: lower runs first) = class * RANK_CLASS + the turn's in-flight counts.
RANK_CLASS = 1_000_000
# A reprocessing run's refresh entries are claimed by id, outside the turn: the low class's first rank.
LOW_RANK = CLASSES["low"] * RANK_CLASS
# Job size classes of the queue-wait histogram, by the items a job was submitted with.
SIZES = ((10, "small"), (1000, "medium"))
# A job's waiting items are taken oldest first, a PDF's pages in order (index ix_items_job_id_status_order);
# jobs.wakes sends its hints in the same order.
CLAIM_ORDER = (Item.created_at, Item.page)


@dataclass(frozen=True)
class Kind:
    """What is claimed: sources to prepare or units to infer."""

    name: str
    waiting: ItemStatus
    in_flight: ItemStatus
    lock: int  # pg_advisory_xact_lock key: one claim of this kind at a time

    def cap(self, rules: FairnessSettings) -> int:
        if self is SOURCES:
            return rules.max_sources_preparing_per_tenant
        return rules.max_units_in_flight_per_tenant


SOURCES = Kind("prep", ItemStatus.QUEUED, ItemStatus.PREPARING, 0x766C6D71_0001)
UNITS = Kind("gpu", ItemStatus.READY, ItemStatus.RUNNING, 0x766C6D71_0002)


@dataclass
class Share:
    """An active job's place in the turn: its work in flight and (up to a claim's size) waiting."""

    job_id: uuid.UUID
    tenant: str
    priority: str
    created_at: datetime
    total_items: int
    in_flight: int
    waiting: int

    @property
    def cls(self) -> int:
        return CLASSES.get(self.priority, len(CLASSES))


class Wait(NamedTuple):
    """How long a claimed item waited (from when it last became waiting), for the histogram."""

    tenant: str
    size: str
    seconds: float


@dataclass(frozen=True)
class Claimed:
    ids: list[uuid.UUID]
    capped: bool  # work was waiting that a tenant cap (or a retry's backoff: retry_at) held back
    ranks: dict[uuid.UUID, int]  # engine priority of each claimed unit (lower: sooner)
    waits: list[Wait]


def size_class(total_items: int) -> str:
    return next((name for limit, name in SIZES if total_items <= limit), "large")


def retry_at(maximum: float) -> ColumnElement[datetime]:
    """When an item given back after its ``attempts``-th try may be claimed again: 1, 2, 4 ... seconds
    later, at most ``maximum`` (queue.retry_backoff_max_seconds). A claim in turn takes the oldest
    waiting item first: without this, every worker's next claim took the same failed page again at
    once, and a 6 s S3 outage spent all of its 12 transport attempts (tests/chaos/test_streaming.py)."""
    seconds = func.least(maximum, func.power(2, func.greatest(Item.attempts - 1, 0)))
    return sql_now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def _due() -> ColumnElement[bool]:
    return or_(Item.retry_at.is_(None), Item.retry_at <= sql_now())


def _deferred(s: Session, kind: Kind) -> bool:
    """Work of ``kind`` waits, not yet due again (given back after a failure): a claim that found
    nothing else hands its word on, as one held back by a cap does, or that work would have none."""
    q = select(Item.id).where(Item.retry_at > sql_now(), Item.status == str(kind.waiting)).limit(1)
    return s.scalar(q) is not None


def shares(s: Session, kind: Kind, n: int) -> list[Share]:
    """Every active job with work of ``kind`` waiting or in flight (waiting counted up to ``n``).

    In flight: one pass over the in-flight items (a partial index holds only open items), grouped by
    job; a count per job scanned them all once for each active job. Waiting: at most ``n`` entries of
    the claim order's index (ix_items_job_id_status_order) per job, ordered as it is so that the planner
    uses it: left unordered it scanned the whole items table for a job that had none."""
    busy = (
        select(Item.job_id, func.count().label("n"))
        .where(Item.status == str(kind.in_flight))
        .group_by(Item.job_id)
        .subquery()
    )
    some = (
        select(Item.id)
        .where(Item.job_id == Job.id, Item.status == str(kind.waiting), _due())
        .order_by(*CLAIM_ORDER)
        .limit(n)
        .correlate(Job)
    )
    waiting = select(func.count()).select_from(some.subquery()).scalar_subquery()
    in_flight = func.coalesce(busy.c.n, 0)
    q = (
        select(Job.id, Job.tenant, Job.priority, Job.created_at, Job.total_items, in_flight, waiting)
        .outerjoin(busy, busy.c.job_id == Job.id)
        .where(Job.status.in_(names(JOB_ACTIVE)))
    )
    return [Share(*row) for row in s.execute(q) if row[5] or row[6]]


Turn = list[tuple[Share, int]]


def plan(jobs: list[Share], n: int, rules: FairnessSettings, cap: int) -> tuple[Turn, bool]:
    """Hand out ``n`` claims one at a time in turn; (share, rank) for each, and whether a cap held
    back waiting work. Pure: the rule lives here and is tested without a database."""
    tenant_load: dict[str, int] = defaultdict(int)
    for j in jobs:
        tenant_load[j.tenant] += j.in_flight
    capped = any(cap and tenant_load[j.tenant] >= cap and j.waiting for j in jobs)
    heap = [(_key(j, tenant_load, rules), i) for i, j in enumerate(jobs) if j.waiting]
    heapq.heapify(heap)
    out: Turn = []
    while heap and len(out) < n:
        _, i = heapq.heappop(heap)
        j = jobs[i]
        if cap and tenant_load[j.tenant] >= cap:
            capped = True
            continue  # this tenant is full: its other jobs' entries are dropped as they come up
        out.append((j, _rank(j, tenant_load, rules)))
        j.in_flight, j.waiting = j.in_flight + 1, j.waiting - 1
        tenant_load[j.tenant] += 1
        if j.waiting:
            heapq.heappush(heap, (_key(j, tenant_load, rules), i))
        _refresh(heap, jobs, j.tenant, tenant_load, rules)
    return out, capped


def _key(j: Share, load: dict[str, int], rules: FairnessSettings) -> tuple[int, float, int, datetime]:
    return (j.cls, load[j.tenant] / rules.weight(j.tenant), j.in_flight, j.created_at)


def _rank(j: Share, load: dict[str, int], rules: FairnessSettings) -> int:
    turn = round(load[j.tenant] / rules.weight(j.tenant)) + j.in_flight
    return j.cls * RANK_CLASS + min(turn, RANK_CLASS - 1)


def _refresh(
    heap: list[tuple[tuple[int, float, int, datetime], int]],
    jobs: list[Share],
    tenant: str,
    load: dict[str, int],
    rules: FairnessSettings,
) -> None:
    """The tenant's load changed: re-key its other jobs' entries (a handful of jobs: a linear pass)."""
    changed = False
    for pos, (_, i) in enumerate(heap):
        if jobs[i].tenant == tenant:
            heap[pos] = (_key(jobs[i], load, rules), i)
            changed = True
    if changed:
        heapq.heapify(heap)


def claim(s: Session, kind: Kind, n: int, rules: FairnessSettings, below: int | None = None) -> Claimed:
    """Lock the next ``n`` waiting items of ``kind`` in turn (FOR UPDATE, in the caller's transaction,
    which then moves them); see the module's docstring. ``below``: only items whose rank is below it
    (a GPU worker whose engine is full looks for urgent work only: workers.inference.gate)."""
    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": kind.lock})
    turn, capped = plan(shares(s, kind, n), n, rules, kind.cap(rules))
    if below is not None:
        turn, capped = [(j, rank) for j, rank in turn if rank < below], False
    per_job: dict[uuid.UUID, list[int]] = defaultdict(list)
    by_id = {}
    for j, rank in turn:
        per_job[j.job_id].append(rank)
        by_id[j.job_id] = j
    ids: list[uuid.UUID] = []
    ranks: dict[uuid.UUID, int] = {}
    waits: list[Wait] = []
    for job_id, job_ranks in per_job.items():
        j = by_id[job_id]
        for (item_id, waited), rank in zip(_lock(s, kind, job_id, len(job_ranks)), job_ranks, strict=False):
            ids.append(item_id)
            ranks[item_id] = rank
            waits.append(Wait(j.tenant, size_class(j.total_items), max(0.0, waited)))
    held_back = capped or (len(ids) < n and _deferred(s, kind))
    return Claimed(ids, held_back, ranks, waits)


def _lock(s: Session, kind: Kind, job_id: uuid.UUID, n: int) -> list[tuple[uuid.UUID, float]]:
    """A job's next ``n`` waiting items, oldest first (a PDF's pages in order), locked; with how long
    each has waited."""
    waited = func.extract("epoch", sql_now() - Item.updated_at)
    q = (
        select(Item.id, waited)
        .where(Item.job_id == job_id, Item.status == str(kind.waiting), _due())
        .order_by(*CLAIM_ORDER)
        .limit(n)
        .with_for_update(skip_locked=True)
    )
    return [(item_id, float(w)) for item_id, w in s.execute(q)]
