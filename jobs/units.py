"""Recording what prep made of a source: its units, chunk by chunk while the pages are rendered
(``add_units``), then the source prepared (``finish_prep``), each in the caller's transaction.
``JobService.add_units`` / ``JobService.finish_prep`` are the public entry points.

Both read the source's job under a share lock (``FOR SHARE``): a cancel (an UPDATE of the job row)
waits for the chunk being recorded, then cancels its units with the other waiting items; a chunk
recorded after the cancel sees it and records nothing. Units are inserted ON CONFLICT DO NOTHING on
(parent, page), so a re-prep after a failure or a lost lease finds the units made before and adds none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs import transitions
from jobs.errors import NotFound
from jobs.models import Item
from jobs.status import JOB_ACTIVE, ItemStatus, JobStatus
from jobs.work import PreparedUnit

Made = Sequence[PreparedUnit | tuple[int, str]]


def add_units(s: Session, item_id: uuid.UUID, units: Made, attempt: int = 0) -> list[uuid.UUID] | None:
    """Record a chunk of a source's units while it is still being prepared; the chunk's READY ids (to
    dispatch now). None: stop rendering. Either the job is no longer active (the source is cancelled,
    as finish_prep would), or this claim (``attempt``, PrepWork.attempt) no longer holds the source:
    its lease ran out and the sweeper put it back, or another worker has claimed it since."""
    made = _made(units)
    source = _source_of_active_job(s, item_id)
    if source is None or source.status != ItemStatus.PREPARING:
        return None
    if attempt and source.attempts != attempt:
        return None
    repo.insert_units(s, source, [u.row() for u in made])
    return repo.unit_ids(s, item_id, ItemStatus.READY, pages=[u.page for u in made])


def finish_prep(
    s: Session,
    item_id: uuid.UUID,
    units: Made,
    page_count: int | None = None,
    dispatched: Sequence[uuid.UUID] = (),
) -> list[uuid.UUID]:
    """Record the source's last units and mark it prepared with ``page_count`` (default: the pages of
    ``units``); return its READY units not in ``dispatched`` (those a streaming prep sent already). A
    source whose job is no longer active is cancelled instead and gets no units; so does a source no
    longer being prepared (failed meanwhile: its job expired; or put back)."""
    made = _made(units)
    source = _source_of_active_job(s, item_id)
    # Only a source being prepared (or prepared: a re-run) takes units. The soak found a source failed by
    # its job's expiry while it was rendered: until the expiry closes the job (its output files are
    # written first) the job still looks active, and this last chunk was recorded as ready pages of an
    # expired job, never to end.
    if source is None or source.status not in (ItemStatus.PREPARING, ItemStatus.PREPARED):
        return []
    repo.insert_units(s, source, [u.row() for u in made])
    pages = page_count if page_count is not None else sum(len(u.pages) or 1 for u in made)
    transitions.move_items(s, [item_id], ItemStatus.PREPARED, {"page_count": pages})
    sent = set(dispatched)
    return [u for u in repo.unit_ids(s, item_id, ItemStatus.READY) if u not in sent]


def _made(units: Made) -> list[PreparedUnit]:
    return [u if isinstance(u, PreparedUnit) else PreparedUnit(*u) for u in units]


def _source_of_active_job(s: Session, item_id: uuid.UUID) -> Item | None:
    """The source, its job held under a share lock; None (the source cancelled) if the job stopped.

    The source's row is locked first, then the job's: the order of jobs.transitions. A cancel waiting
    to move the job holds this source's row (it looked at it while the source was being claimed); had
    this taken the job first, each would wait on the other until Postgres aborted one (bench.listing
    cancelling a 100,000-item job: a 503, or prep's chunk lost)."""
    source = s.scalar(select(Item).where(Item.id == item_id).with_for_update(key_share=True))  # NO KEY UPDATE
    if source is None:
        raise NotFound(f"item {item_id} not found")
    job = repo.get_job(s, source.job_id, lock=True)
    if job is None or JobStatus(job.status) not in JOB_ACTIVE:
        transitions.move_items(s, [item_id], ItemStatus.CANCELLED)
        return None
    return source
