"""Every status change of jobs, items and OpenAI batches: the one module that writes a status.

Each move is a compare-and-set ``UPDATE ... WHERE status IN (...)`` whose allowed sources come from
jobs.status's tables (``item_sources_for``, ``job_sources_for``), so two workers racing on one row cannot
both win; Postgres refuses any other move (migration 0009) and records every move it allows in
``events``, from and to (migration 0010): this module adds only who reopened items. The two deliberate
reopenings (a user's retry, reprocessing) are here too, as the one way out of ``failed``. Reprocessing
runs and their entries move here too (``ENTRY_TRANSITIONS``). Reading rows and writing results is
elsewhere (jobs.repository, jobs.reprocessing.runs).

Lock order, in every transaction that takes more than one: a job's finalizer lock (``lock_job_finalize``),
then its listing (jobs.listings), then its items' rows, then the job's row. A claim cannot do otherwise
(it picks items across jobs, then moves their job from queued to running), so a cancel, a retry, an
expiry and a listing page take theirs in the same order; the other way round two of them wait on each
other until Postgres aborts one (see jobs.control.cancel). Listings and reprocessing runs and entries
change status here too.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, exists, null, select, true, tuple_, update
from sqlalchemy.orm import Session, aliased

from jobs.clock import sql_now
from jobs.leases import lease_until
from jobs.models import Batch, Item, Job, Listing
from jobs.repository import PAGE_FAILED, add_event, lock_job_finalize
from jobs.reprocessing.models import ReprocessEntry, ReprocessRun
from jobs.status import (
    ENTRY_OPEN,
    ENTRY_TRANSITIONS,
    EXPIRED_CODE,
    ITEM_TERMINAL,
    JOB_ACTIVE,
    LISTING_TRANSITIONS,
    ItemStatus,
    JobStatus,
    item_sources_for,
    job_sources_for,
    names,
)
from jobs.work import Held

E = ReprocessEntry


def move_items(
    s: Session,
    item_ids: Sequence[uuid.UUID],
    target: ItemStatus,
    values: dict[str, Any] | None = None,
) -> list[Item]:
    """Compare-and-set: move those of ``item_ids`` whose status allows it; return the rows moved.

    A move drops the item's lease unless ``values`` sets one (a claim does)."""
    if not item_ids:
        return []
    sources = [str(x) for x in item_sources_for(target)]
    stmt = (
        update(Item)
        .where(Item.id.in_(item_ids), Item.status.in_(sources))
        .values(status=str(target), updated_at=sql_now(), **{"lease_until": None, **(values or {})})
        .returning(Item)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list(s.scalars(stmt))


def move_job(s: Session, job_id: uuid.UUID, target: JobStatus, values: dict[str, Any] | None = None) -> bool:
    sources = [str(x) for x in job_sources_for(target)]
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources))
        .values(status=str(target), updated_at=sql_now(), **(values or {}))
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return s.scalar(stmt) is not None


def settle_sources(s: Session, job_id: uuid.UUID, only: Sequence[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Prepared sources whose units are all terminal take their units' worst outcome: failed
    (``page_failed``) if any unit failed, else cancelled if any was, else expired (failed, code
    ``expired``) if any expired, else succeeded. ``only``: just these sources (a worker
    settles the sources it touched; checking every source of a 10,000-item job after each batch would
    make a job quadratic)."""
    if only is None:
        return list(s.scalars(_SETTLE_ALL, {"the_job": job_id}))
    return list(s.scalars(_SETTLE_ONLY, {"the_job": job_id, "only": list(only)}))


def _settle_statement(only: bool) -> Any:
    """settle_sources' UPDATE, built once (every batch settles its sources: building the statement
    each time cost more CPU than running it), its job and sources as parameters."""
    unit = aliased(Item)

    def any_unit(*where: Any) -> Any:
        return exists().where(unit.parent_id == Item.id, *where)

    failed = unit.status == str(ItemStatus.FAILED)
    open_units = any_unit(unit.status.not_in([str(x) for x in ITEM_TERMINAL]))
    # (condition, status, error code, message), the first that holds wins. SQL spells jobs.status's
    # outcome rule here (failed with the code "expired" is expired), as an UPDATE must.
    worst = (
        (any_unit(failed, unit.error_code.is_distinct_from(EXPIRED_CODE)), ItemStatus.FAILED, PAGE_FAILED,
         "one or more pages failed; see the page errors"),
        (any_unit(unit.status == str(ItemStatus.CANCELLED)), ItemStatus.CANCELLED, None, None),
        (any_unit(failed, unit.error_code == EXPIRED_CODE), ItemStatus.FAILED, EXPIRED_CODE,
         "the job passed its expiry time before all of its pages finished"),
    )  # fmt: skip
    return (
        update(Item)
        .where(Item.job_id == bindparam("the_job"), Item.status == str(ItemStatus.PREPARED), ~open_units)
        .where(Item.id.in_(bindparam("only", expanding=True)) if only else true())
        .values(
            status=case(*((w[0], str(w[1])) for w in worst), else_=str(ItemStatus.SUCCEEDED)),
            error_code=case(*((w[0], w[2] if w[2] else null()) for w in worst)),
            error_message=case(*((w[0], w[3] if w[3] else null()) for w in worst)),
            updated_at=sql_now(),
        )
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    )


_SETTLE_ALL, _SETTLE_ONLY = _settle_statement(False), _settle_statement(True)


def take_back(s: Session, held: Held, attempts_limit: int) -> list[uuid.UUID]:
    """Units still running under the claims ``held`` ({unit id: the attempts the claim set}) back to
    ready, for the retry of the task that made them: its run failed and could not give them back (the
    database was unreachable), and without this the retry would claim nothing and they would wait for
    their lease to run out and the sweeper (lease + sweep interval: minutes).

    Why the attempts are the claim: every claim adds one and nothing else moves them while a unit
    runs, so a unit at the count its claim set is still under it. One whose lease ran out and that
    another worker claimed has moved on, and is left to that worker; one stored meanwhile (the commit
    went through before the connection broke) is no longer running. A compare-and-set in one statement,
    so a retry delivered twice takes back nothing the second time (the first claimed them again, a new
    count). The one reset, a reopen, needs the unit failed and reopened in between; even then
    complete_units stores one result. A unit whose attempts are spent is left to its lease: the sweeper
    fails it."""
    if not held:
        return []
    stmt = (
        update(Item)
        .where(tuple_(Item.id, Item.attempts).in_(list(held.items())))
        .where(Item.status == str(ItemStatus.RUNNING), Item.attempts < attempts_limit)
        .values(status=str(ItemStatus.READY), lease_until=None, updated_at=sql_now())
        .returning(Item.id, Item.job_id)
        .execution_options(synchronize_session=False)
    )
    return [i for i, _ in s.execute(stmt)]


def set_status(
    s: Session, job_id: uuid.UUID, sources: frozenset[ItemStatus], target: ItemStatus, **values: Any
) -> int:
    """Move every item of the job in one of ``sources`` to ``target``; the number moved."""
    stmt = (
        update(Item)
        .where(Item.job_id == job_id, Item.status.in_(names(sources)))
        .values(status=str(target), updated_at=sql_now(), lease_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]  # a count, not 100,000 ids


def reopen_failed(
    s: Session, which: ColumnElement[bool], expiry_seconds: float, detail: str
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The one way out of ``failed``, for a user's retry (jobs.control: ``which`` is a job's items) and a
    reprocessing run (jobs.reprocessing.runs: the items it selected). The failed items among ``which`` go
    back to waiting, attempts and errors cleared: a page to ready (its prepared source back to prepared), a
    source that failed before it was prepared to queued, pages or not (a later page could not be
    rendered; its re-prep keeps the pages made). Their jobs are reopened (``_reopen_jobs``).
    Returns (sources to prepare, pages to infer); ``detail`` goes on the events (who reopened).

    Each job's finalizer lock is taken first (in id order): a finalizer that counted no open item must
    not complete the job after these items reopened (the soak: a retry 0.17 s before a finalizer's
    close left a completed job with 30 ready pages)."""
    failed = select(Item.job_id).where(which, Item.status == str(ItemStatus.FAILED)).distinct()
    for job_id in sorted(s.scalars(failed)):
        lock_job_finalize(s, job_id)
    units = _reopen(s, which, Item.parent_id.is_not(None), ItemStatus.READY)
    # Prepared sources have a page count (jobs.units.finish_prep); one without never got all its pages.
    unprepared = and_(Item.parent_id.is_(None), Item.page_count.is_(None))
    sources = _reopen(s, which, unprepared, ItemStatus.QUEUED)
    parents = {p for _, _, p in units}
    if parents:
        _reopen(s, Item.id.in_(parents), Item.page_count.is_not(None), ItemStatus.PREPARED)
    reopened = Counter(j for _, j, _ in units + sources)
    _reopen_jobs(s, set(reopened), expiry_seconds)
    for job_id, n in reopened.items():  # who reopened them; the moves themselves are in events already
        add_event(s, job_id, "items.reopened", detail=f"{detail}: {n} items")
    return [i for i, _, _ in sources], [i for i, _, _ in units]


def _reopen(
    s: Session, which: ColumnElement[bool], kind: ColumnElement[bool], to: ItemStatus
) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None]]:
    """Failed items of ``which`` and ``kind`` to ``to``, as new: (id, job id, parent id) of each."""
    new = {"attempts": 0, "error_code": None, "error_message": None, "lease_until": None}
    stmt = (
        update(Item)
        .where(which, kind, Item.status == str(ItemStatus.FAILED))
        .values(status=str(to), updated_at=sql_now(), **new)
        .returning(Item.id, Item.job_id, Item.parent_id)
        .execution_options(synchronize_session=False)
    )
    return [(i, j, p) for i, j, p in s.execute(stmt)]


def _reopen_jobs(s: Session, job_ids: set[uuid.UUID], expiry_seconds: float) -> None:
    """A finished (not cancelled) job of reopened items runs again: its finalizer settles it and writes
    its output files again. Each such job, finished or still running, gets a full expiry window from
    now, as a new job would: its old window is often over (a nightly run only looks at jobs a day old),
    and the next sweep would end it ``expired`` and fail the items just reopened."""
    if not job_ids:
        return
    finished = names(frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.EXPIRED}))
    s.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(finished))
        .values(status=str(JobStatus.RUNNING), completed_at=None, error=None, updated_at=sql_now())
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(names(JOB_ACTIVE)))
        .values(expires_at=lease_until(expiry_seconds), updated_at=sql_now())
        .execution_options(synchronize_session=False)
    )


def move_batch(
    s: Session, batch_id: str, sources: Sequence[str], target: str, values: dict[str, Any] | None = None
) -> bool:
    """Compare-and-set on the batch status; True when this call moved it."""
    stmt = (
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(list(sources)))
        .values(status=target, updated_at=sql_now(), **(values or {}))
        .returning(Batch.id)
        .execution_options(synchronize_session=False)
    )
    return s.scalar(stmt) is not None


# -- reprocessing: a run's entries (pending -> running -> changed | unchanged | failed) and the run --


def claim_entries(s: Session, run_id: uuid.UUID, item_ids: Sequence[uuid.UUID]) -> list[Item]:
    """Compare-and-set pending -> running on refresh entries whose page is still succeeded."""
    still = exists().where(Item.id == E.item_id, Item.status == str(ItemStatus.SUCCEEDED))
    claimed = s.scalars(
        update(E)
        .where(E.run_id == run_id, E.item_id.in_(item_ids), E.mode == "refresh", E.state == "pending", still)
        .values(state="running", attempts=E.attempts + 1, updated_at=sql_now())
        .returning(E.item_id)
        .execution_options(synchronize_session=False)
    ).all()
    return list(s.scalars(select(Item).where(Item.id.in_(claimed)).order_by(Item.page))) if claimed else []


def take_back_entries(s: Session, run_id: uuid.UUID, held: Held, attempts_limit: int) -> None:
    """Refresh entries still running under the claims ``held`` ({item id: the entry's attempts the claim
    set}) back to pending, for the retry of the task that made them (take_back says why; an
    entry's attempts are never reset). Entries whose attempts are spent are left to go stale."""
    if held:
        s.execute(
            update(E)
            .where(E.run_id == run_id, tuple_(E.item_id, E.attempts).in_(list(held.items())))
            .where(E.state == "running", E.attempts < attempts_limit)
            .values(state="pending", updated_at=sql_now())
            .execution_options(synchronize_session=False)
        )


def move_entries(
    s: Session, run_id: uuid.UUID, item_ids: Sequence[uuid.UUID], frm: str, to: str, **values: Any
) -> list[uuid.UUID]:
    """Compare-and-set on entries: those of ``item_ids`` in state ``frm`` go to ``to`` (a move
    jobs.status.ENTRY_TRANSITIONS allows)."""
    if to not in ENTRY_TRANSITIONS[frm]:
        raise ValueError(f"a reprocessing entry does not move from {frm} to {to}")
    if not item_ids:
        return []
    stmt = (
        update(E)
        .where(E.run_id == run_id, E.item_id.in_(item_ids), E.state == frm)
        .values(state=to, updated_at=sql_now(), **values)
        .returning(E.item_id)
        .execution_options(synchronize_session=False)
    )
    return list(s.scalars(stmt))


def settle_retries(s: Session, run_id: uuid.UUID) -> None:
    """Retry entries whose item reached a terminal state close: succeeded -> changed, else failed."""
    terminal = [str(x) for x in ITEM_TERMINAL]
    ok = Item.status == str(ItemStatus.SUCCEEDED)
    s.execute(
        update(E)
        .where(E.run_id == run_id, E.mode == "retry", E.state == "pending")
        .where(E.item_id == Item.id, Item.status.in_(terminal))
        .values(
            state=case((ok, "changed"), else_="failed"),
            error_code=case((ok, None), else_=Item.error_code),
            error_message=case((ok, None), else_=Item.error_message),
            updated_at=sql_now(),
        )
        .execution_options(synchronize_session=False)
    )


def complete_run(s: Session, run_id: uuid.UUID, report: dict[str, Any]) -> bool:
    """running -> completed once no entry is open; the winner stores the final report."""
    open_entry = exists().where(E.run_id == run_id, E.state.in_(ENTRY_OPEN))
    stmt = (
        update(ReprocessRun)
        .where(ReprocessRun.id == run_id, ReprocessRun.status == "running", ~open_entry)
        .values(status="completed", completed_at=sql_now(), report=report)
        .returning(ReprocessRun.id)
        .execution_options(synchronize_session=False)
    )
    return s.scalar(stmt) is not None


def stale_refreshes(s: Session, cutoff: datetime) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Refresh entries that have not moved since ``cutoff`` (lost message or worker) go back to pending;
    returns (run_id, item_id) to send again. A duplicate message is harmless: claims are compare-and-set."""
    stmt = (
        update(E)
        .where(E.mode == "refresh", E.state.in_(ENTRY_OPEN), E.updated_at < cutoff)
        .values(state="pending", updated_at=sql_now())
        .returning(E.run_id, E.item_id)
        .execution_options(synchronize_session=False)
    )
    return [(r, i) for r, i in s.execute(stmt)]


def advance_listing(
    s: Session,
    job_id: uuid.UUID,
    seen: int,
    cursor: dict[str, Any],
    status: str,
    error: str | None,
    values: dict[str, Any],
) -> bool:
    """Compare-and-set: the listing moves past the page it stood at (``seen`` pages stored) to
    ``cursor``, and to ``status`` (``listing`` while pages remain). False: another delivery stored this
    page first, or the listing ended meanwhile; store nothing."""
    ended = {"done_at": sql_now()} if status != "listing" else {}
    stmt = (
        update(Listing)
        .where(Listing.job_id == job_id, Listing.pages == seen, Listing.status == "listing")
        .values(
            cursor=cursor,
            pages=Listing.pages + 1,
            status=status,
            error=error,
            updated_at=sql_now(),
            **ended,
            **values,
        )
        .returning(Listing.job_id)
    )
    return s.scalar(stmt) is not None


def end_listing(s: Session, job_id: uuid.UUID, seen: int | None, status: str, error: str | None) -> bool:
    """The listing ends ``status`` (done, stopped, failed) without storing a page; ``seen``: only if it
    still stands where its caller read it. False: it had ended, or moved on."""
    stmt = update(Listing).where(Listing.job_id == job_id, Listing.status.in_(_listing_sources(status)))
    if seen is not None:
        stmt = stmt.where(Listing.pages == seen)
    stmt = stmt.values(status=status, error=error, updated_at=sql_now(), done_at=sql_now())
    return s.scalar(stmt.returning(Listing.job_id)) is not None


def _listing_sources(target: str) -> list[str]:
    return [a for a, targets in LISTING_TRANSITIONS.items() if target in targets]


def stop_listings_of_ended_jobs(s: Session) -> int:
    """Listings still going whose job ended without their noticing (their message lost): stopped."""
    ended = select(Job.id).where(Job.status.not_in([str(x) for x in JOB_ACTIVE]))
    stmt = (
        update(Listing)
        .where(Listing.status == "listing", Listing.job_id.in_(ended))
        .values(status="stopped", error="the job ended", updated_at=sql_now(), done_at=sql_now())
        .returning(Listing.job_id)
    )
    return len(list(s.scalars(stmt)))
