"""The sweeper's word for waiting work whose messages may be lost, sent per job and kind, not per item.

A message on ``prep`` or ``gpu`` is word that work waits; the worker that takes it claims whatever is next
in turn across every active job (jobs.scheduling.fairness), not the ids it names, which are hints. So what
a lost message loses is a word, and the sweeper owes words, not particular items. A job's work of one kind
(sources to prepare, units to infer) is woken when

* Redis lost its data (a FLUSHALL, a restart without persistence): every active job with work waiting;
* or it waits while none of the job's work of that kind is in flight, the next of it in the job's claim
  order has waited ``queue.requeue_after_seconds``, and the job was not woken for that kind within as long.

A wake sends one word per waiting item (the job's next waiting ids in claim order as hints, at most
``queue.sweep_batch`` a pass over every job; the rest is ``owed`` and goes out in the next passes) and
records itself in ``job_wakes``. Nothing writes the waiting items: the old per-item rule UPDATEd up to
10,000 of them a pass (their ``updated_at``, through every index of ``items``), 0.76-1.1 s at 10^6 items.
What a pass reads is the counts Postgres keeps (jobs.tallies), one index probe per idle job and kind, and
the ids it sends. A word too many is harmless: a claim is a compare-and-set, and one that finds nothing
does nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ScalarSelect, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from jobs import tallies
from jobs.clock import sql_now
from jobs.models import Item, Job, Wake
from jobs.scheduling.fairness import CLAIM_ORDER, SOURCES, UNITS, Kind

KINDS = {k.name: k for k in (SOURCES, UNITS)}
Row = tuple[uuid.UUID, str, str]  # (item id, its status, job priority): what jobs.sweeper.resend sends
Key = tuple[uuid.UUID, str]  # (job id, kind name)


@dataclass
class Open:
    """A job's work of one kind: how many items wait and how many are in flight (jobs.tallies)."""

    priority: str
    waiting: int = 0
    in_flight: int = 0


def wake(s: Session, older_than: float | None, budget: int) -> list[Row]:
    """Wake what is due (the module's docstring; ``older_than`` None: after a broker reset, all of it),
    owed words first; at most ``budget`` words. The rows to send, in the caller's transaction."""
    work = {k: o for k, o in open_work(s).items() if o.waiting > 0}
    owed = {} if older_than is None else _owed(s, list(work))
    idle = [k for k, o in work.items() if not o.in_flight and k not in owed]
    fresh = set(work) if older_than is None else _idle_too_long(s, idle, older_than)
    due = {**owed, **{k: work[k].waiting for k in fresh}}
    rows: list[Row] = []
    left: dict[Key, int] = {}
    for key, words in due.items():
        take = min(words, work[key].waiting, budget - len(rows))
        rows += _next_waiting(s, key, take, work[key].priority)
        left[key] = min(words, work[key].waiting) - take
    _record(s, left)
    return rows


def open_work(s: Session) -> dict[Key, Open]:
    """Every active job's waiting and in-flight work by kind, from the counts Postgres keeps: a few rows
    a job, whatever its size."""
    status = {str(k.waiting): (k, "waiting") for k in KINDS.values()}
    status |= {str(k.in_flight): (k, "in_flight") for k in KINDS.values()}
    out: dict[Key, Open] = {}
    for job_id, _, priority, st, n in tallies.active_open(s):
        kind, field = status[st]
        setattr(out.setdefault((job_id, kind.name), Open(priority)), field, n)
    return out


def _owed(s: Session, keys: list[Key]) -> dict[Key, int]:
    """Words a wake still owes (a pass's budget ran out) to these job-kinds."""
    if not keys:
        return {}
    q = select(Wake.job_id, Wake.kind, Wake.owed).where(
        Wake.owed > 0, Wake.job_id.in_(list({job for job, _ in keys}))
    )
    wanted = set(keys)
    return {(j, k): n for j, k, n in s.execute(q) if (j, k) in wanted}


def _idle_too_long(s: Session, keys: list[Key], older_than: float) -> set[Key]:
    """Those of ``keys`` (nothing in flight) whose next waiting item in the claim order has waited
    ``older_than`` seconds and that were not woken within as long: one probe of the claim order's index
    (ix_items_job_id_status_order) a job, never its other waiting items."""
    cutoff = sql_now() - timedelta(seconds=older_than)
    out: set[Key] = set()
    for name, kind in KINDS.items():
        jobs = [job for job, k in keys if k == name]
        if jobs:
            woken = exists().where(Wake.job_id == Job.id, Wake.kind == name, Wake.woken_at >= cutoff)
            q = select(Job.id).where(Job.id.in_(jobs), _head(kind) < cutoff, ~woken)
            out |= {(job, name) for job in s.scalars(q)}
    return out


def _head(kind: Kind) -> ScalarSelect[datetime]:
    """When the job's next waiting item of ``kind`` in the claim order became waiting."""
    q = select(Item.updated_at).where(Item.job_id == Job.id, Item.status == str(kind.waiting))
    return q.order_by(*CLAIM_ORDER).limit(1).correlate(Job).scalar_subquery()


def _next_waiting(s: Session, key: Key, n: int, priority: str) -> list[Row]:
    """The job's next ``n`` waiting items of the kind in the claim order: the words' hints."""
    if n <= 0:
        return []
    job_id, kind = key[0], KINDS[key[1]]
    q = select(Item.id).where(Item.job_id == job_id, Item.status == str(kind.waiting))
    ids = s.scalars(q.order_by(*CLAIM_ORDER).limit(n))
    return [(item_id, str(kind.waiting), priority) for item_id in ids]


def _record(s: Session, owed: dict[Key, int]) -> None:
    """Each woken job-kind's wake: now, and the words it still owes."""
    if not owed:
        return
    rows = [{"job_id": j, "kind": k, "woken_at": sql_now(), "owed": n} for (j, k), n in owed.items()]
    stmt = insert(Wake).values(rows)
    kept = {"woken_at": stmt.excluded.woken_at, "owed": stmt.excluded.owed}
    s.execute(stmt.on_conflict_do_update(index_elements=[Wake.job_id, Wake.kind], set_=kept))
