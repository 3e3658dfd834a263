"""A worker going away (SIGTERM: a preemptible host's notice, a rollout) hands back the units it still
runs, at once, rather than leaving them to its leases' end and a sweep (workers.drain drives it)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from jobs import transitions
from jobs.leases import job_priorities
from jobs.models import Item
from jobs.status import ItemStatus


def hand_back(s: Session, held: Mapping[uuid.UUID, int]) -> list[tuple[uuid.UUID, str, str]]:
    """Units a draining worker still runs under its claims (id -> the attempt its claim set) back to
    ready at once, that attempt given back: the worker is going away, the units did nothing wrong. A unit
    the sweeper already took back (or another worker claimed since: a later attempt) is not touched.
    (unit, status, job priority) of those moved, for their messages."""
    if not held:
        return []
    pairs = [and_(Item.id == i, Item.attempts == a) for i, a in held.items()]
    mine = select(Item.id).where(or_(*pairs), Item.status == str(ItemStatus.RUNNING)).with_for_update()
    ids = list(s.scalars(mine))
    moved = transitions.move_items(s, ids, ItemStatus.READY, {"attempts": Item.attempts - 1})
    priorities = job_priorities(s, {it.job_id for it in moved})
    return [(it.id, it.status, priorities[it.job_id]) for it in moved]
