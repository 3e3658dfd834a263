"""SQL of a job's rows: reading jobs and items, inserting sources and units, storing results (upserts
on (item, version)), counting outcomes (the one counting query), the result lines' query, and the event
log. Status changes are jobs.transitions'; leases and the sweeper's queries jobs.leases'; the OpenAI
files and batches jobs.openai.repository's; reprocessing entries jobs.reprocessing.runs'.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    Uuid,
    and_,
    cast,
    delete,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Subquery

from jobs import tallies as tallies_of
from jobs.clock import sql_now
from jobs.models import OPEN_ITEM_STATES, Event, Item, Job, Listing, Result
from jobs.schemas import Counts
from jobs.status import (
    EXPIRED_CODE,
    JOB_ACTIVE,
    JOB_TERMINAL,
    ItemStatus,
    JobStatus,
    Outcome,
    outcome,
)

PAGE_FAILED = "page_failed"  # a prepared source's code when one or more of its units failed
Row = tuple[Item, Item | None, Result | None]  # (source, unit, result): one line of a job's results


def add_event(
    s: Session,
    job_id: uuid.UUID,
    kind: str,
    *,
    item_id: uuid.UUID | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    detail: str | None = None,
) -> None:
    s.add(
        Event(
            job_id=job_id,
            item_id=item_id,
            kind=kind,
            from_status=from_status,
            to_status=to_status,
            detail=detail,
        )
    )


def events(
    s: Session, job_id: uuid.UUID, after: int, limit: int
) -> list[tuple[Event, str | None, int | None]]:
    """A job's history in order, from event id ``after`` (a cursor): each event with its item's
    custom_id and page."""
    q = (
        select(Event, Item.custom_id, Item.page)
        .outerjoin(Item, Item.id == Event.item_id)
        .where(Event.job_id == job_id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    )
    return [(e, custom_id, page) for e, custom_id, page in s.execute(q)]


def delete_old_events(s: Session, days: float, limit: int) -> int:
    """Up to ``limit`` events older than ``days`` deleted (oldest first); how many."""
    old = select(Event.id).where(Event.created_at < sql_now() - timedelta(days=days))
    stmt = delete(Event).where(Event.id.in_(old.order_by(Event.id).limit(limit).scalar_subquery()))
    return int(s.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def job_by_idempotency_key(s: Session, tenant: str, key: str) -> Job | None:
    return s.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))


def get_job(s: Session, job_id: uuid.UUID, tenant: str | None = None, lock: bool = False) -> Job | None:
    """``lock``: hold the row FOR SHARE to the end of the transaction (a cancel waits for it)."""
    q = select(Job).where(Job.id == job_id)
    if tenant is not None:
        q = q.where(Job.tenant == tenant)
    if lock:
        q = q.with_for_update(read=True)
    return s.scalar(q)


def get_item(s: Session, item_id: uuid.UUID) -> Item | None:
    return s.get(Item, item_id)


def insert_units(s: Session, source: Item, units: Iterable[dict[str, Any]]) -> None:
    """Create the source's units (``page``, ``media_key`` and optionally ``text_key``, ``options``);
    a repeated prep finds them there already (ON CONFLICT DO NOTHING)."""
    rows = [
        {
            "id": uuid.uuid4(),
            "job_id": source.job_id,
            "parent_id": source.id,
            "custom_id": source.custom_id,
            "kind": "page",
            "prompt": source.prompt,
            "status": str(ItemStatus.READY),
            "text_key": None,
            "options": {},
            **unit,
        }
        for unit in units
    ]
    if rows:
        s.execute(insert(Item).values(rows).on_conflict_do_nothing(index_elements=["parent_id", "page"]))


def unit_ids(
    s: Session, parent_id: uuid.UUID, status: ItemStatus, pages: Sequence[int] | None = None
) -> list[uuid.UUID]:
    """The source's units in ``status`` (only those of ``pages``, if given), in page order."""
    q = select(Item.id).where(Item.parent_id == parent_id, Item.status == str(status)).order_by(Item.page)
    if pages is not None:
        q = q.where(Item.page.in_(pages))
    return list(s.scalars(q))


def next_versions(s: Session, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The result version each item's next result gets: one past its latest (1 for none)."""
    q = select(Result.item_id, func.max(Result.version)).where(Result.item_id.in_(item_ids))
    latest = {i: int(v) for i, v in s.execute(q.group_by(Result.item_id))}
    return {i: latest.get(i, 0) + 1 for i in item_ids}


def upsert_result(s: Session, values: dict[str, Any]) -> None:
    """Store ``values`` as the item's current result; the version it replaces stays as history."""
    upsert_results(s, [values])


def upsert_results(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Store each row as its item's current result (one statement for all: a worker stores a batch's
    results at once); the versions they replace stay as history.

    Idempotent: a redelivered inference task rewrites the same (item, version) rows. The older current
    rows are unmarked first, in the same transaction, as at most one row per item may be current.
    """
    if not rows:
        return
    if len({r["item_id"] for r in rows}) != len(rows):  # both would be inserted as current
        raise ValueError("upsert_results takes one row per item")
    s.execute(
        update(Result)
        .where(
            Result.item_id.in_([r["item_id"] for r in rows]),
            tuple_(Result.item_id, Result.version).not_in([(r["item_id"], r["version"]) for r in rows]),
            Result.is_current,
        )
        .values(is_current=False)
        .execution_options(synchronize_session=False)
    )
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}  # one INSERT per column set
    for r in rows:
        by_columns.setdefault(tuple(sorted(r)), []).append({**r, "is_current": True})
    for columns, same in by_columns.items():
        # The rows as parameters (SQLAlchemy batches them into multi-row VALUES itself), not in the
        # statement: a statement holding the values is compiled anew for every batch (2-3 ms of CPU).
        stmt = insert(Result)
        updatable = {k: stmt.excluded[k] for k in columns if k not in ("id", "item_id", "version", "job_id")}
        s.execute(stmt.on_conflict_do_update(index_elements=["item_id", "version"], set_=updatable), same)


def lock_job_finalize(s: Session, job_id: uuid.UUID) -> None:
    """A transaction-scoped advisory lock per job, taken first: finalizers of one job run one after
    the other, each seeing what the one before it committed. An advisory lock, not the job's row, so
    that nothing else (claims, prep, cancels, which lock rows) ever waits for it or deadlocks with it."""
    key = int.from_bytes(job_id.bytes[:8], "big", signed=True)
    s.execute(select(func.pg_advisory_xact_lock(key)))


def any_open(s: Session, job_id: uuid.UUID) -> bool:
    """Whether any of the job's items is not terminal: sources and units alike, since a source that
    failed while it was being prepared (a later page could not be rendered) may still have earlier
    pages running. An active job's listing still going (jobs.listings) counts: more items are on their
    way. An EXISTS on the partial index of open items per job (ix_items_open_job): a count of the open
    items, as before, read 200-300 ms of a million-item job at every finalize (bench/scale.py)."""
    items = exists().where(Item.job_id == job_id, Item.status.in_(OPEN_ITEM_STATES))
    listing = exists().where(
        Listing.job_id == job_id,
        Listing.status == "listing",
        exists().where(Job.id == job_id, Job.status.in_([str(x) for x in JOB_ACTIVE])),
    )
    return bool(s.scalar(select(or_(items, listing))))


def counts(s: Session, job_id: uuid.UUID, sources: bool) -> Counts:
    """The job's sources (parent NULL) or units by outcome."""
    return outcome_counts(s, [job_id], sources)[job_id]


def outcome_counts(s: Session, job_ids: Sequence[uuid.UUID], sources: bool) -> dict[uuid.UUID, Counts]:
    """The one query every view of a job counts with: each job's sources or units by outcome.

    Read from the counts Postgres keeps as items change (jobs.tallies: a handful of rows a job, where
    a GROUP BY of the items read all of a million-item job's rows), by status and error code, and turned
    into outcomes by jobs.status.outcome, so that the rule lives in one place and not again in SQL."""
    tallies: dict[uuid.UUID, Counter[Outcome]] = {j: Counter() for j in job_ids}
    for job_id, _, status, code, n in tallies_of.by_status(s, job_ids, sources):
        tallies[job_id][outcome(status, code)] += n
    return {j: Counts.tally(t) for j, t in tallies.items()}


def result_rows(s: Session, job_id: uuid.UUID, history: bool = False) -> list[Row]:
    """(source, unit, current result) for every page, plus (source, None, None) for sources with no units
    and, after its pages, for a source that failed itself once some of its pages were made (a later page
    could not be rendered, its job expired while it was prepared): that error is no page's.
    With ``history``, one row per result version of each page instead of the current one only.

    Ordered by source submission order then page, so a results file reads like the input.
    """
    return _rows(s, _lines(job_id), history)


LineKey = tuple[datetime, str, uuid.UUID, int, int]  # a line's place: its source's keys, tail, page or 0


def result_rows_from(
    s: Session, job_id: uuid.UUID, limit: int, after: LineKey | None = None, before: LineKey | None = None
) -> tuple[list[tuple[Row, LineKey]], bool]:
    """A page of ``result_rows(s, job_id)`` by keyset, each line with its key: the ``limit`` lines after
    ``after`` (from the first without it), or the last ``limit`` before ``before``; and whether there
    are more beyond. It reads the page's sources (every source has a line, so ``limit`` + 2 of them hold
    the page and one line more) and their units, at any size of job: an OFFSET read every line before
    the page (1.45 s in the middle of a million-line job, bench/scale.py)."""
    back, at = before is not None, before if before is not None else after
    order = (lambda cols: [c.desc() for c in cols]) if back else list
    src_keys = (Item.created_at, Item.custom_id, Item.id)
    picked = select(Item.id).where(Item.job_id == job_id, Item.parent_id.is_(None))
    if at is not None:
        picked = picked.where(
            tuple_(*src_keys) <= tuple_(*at[:3]) if back else tuple_(*src_keys) >= tuple_(*at[:3])
        )
    lines = _lines(job_id, picked.order_by(*order(src_keys)).limit(limit + 2).scalar_subquery())
    key = (lines.c.created_at, lines.c.custom_id, lines.c.src, lines.c.tail, func.coalesce(lines.c.page, 0))
    cut = select(lines, key[-1].label("place")).order_by(*order(key)).limit(limit + 1)
    if at is not None:
        cut = cut.where(tuple_(*key) < tuple_(*at) if back else tuple_(*key) > tuple_(*at))
    page = cut.subquery()  # the page's lines (and one more), joined and put in order as every listing
    q = _rows_query(page, history=False).add_columns(page.c.tail, page.c.place)
    rows = [
        ((a, b, r), (a.created_at, a.custom_id, a.id, tail, place)) for a, b, r, tail, place in s.execute(q)
    ]
    # The line more, cut off: the last one going forward, the first one (furthest back) going back.
    return (rows[-limit:] if back else rows[:limit]), len(rows) > limit


def _lines(job_id: uuid.UUID, sources: Any = None) -> Subquery:
    """A job's result lines as SQL, unordered: one per unit, one for a source without units, and a
    source's own error line after its units (``tail`` 1) when it failed for a reason of its own.
    ``sources``: only these sources' lines (a subquery of their ids)."""
    src, unit = aliased(Item), aliased(Item)
    keys = (src.created_at.label("created_at"), src.custom_id.label("custom_id"), src.id.label("src"))
    mine = (
        src.job_id == job_id,
        src.parent_id.is_(None),
        *([] if sources is None else [src.id.in_(sources)]),
    )
    has_units = exists().where(unit.parent_id == src.id)
    no_unit, no_page = cast(null(), Uuid).label("unit"), cast(null(), Integer).label("page")
    own = and_(
        has_units,
        src.status == str(ItemStatus.FAILED),
        src.error_code.is_distinct_from(PAGE_FAILED),
        # A prepared source (page_count set) that expired did so through its pages, which have lines.
        or_(src.page_count.is_(None), src.error_code.is_distinct_from(EXPIRED_CODE)),
    )
    return union_all(
        select(*keys, unit.id.label("unit"), literal(0).label("tail"), unit.page.label("page"))
        .join(unit, unit.parent_id == src.id)
        .where(*mine),
        select(*keys, no_unit, literal(0).label("tail"), no_page).where(*mine, ~has_units),
        select(*keys, no_unit, literal(1).label("tail"), no_page).where(*mine, own),
    ).subquery()


def stream_result_rows(
    s: Session, job_id: uuid.UUID, history: bool = False, chunk: int = 2000
) -> Iterator[Row]:
    """``result_rows``, read from a server-side cursor ``chunk`` rows at a time, each chunk's objects let
    go of once yielded (in a transaction: the cursor lives in it). What writes a job's output files and
    streams its results: a job of a million pages in bounded memory, where a list holds every row."""
    result = s.execute(_rows_query(_lines(job_id), history), execution_options={"yield_per": chunk})
    for part in result.partitions():
        yield from ((a, b, r) for a, b, r in part)
        for obj in {id(o): o for row in part for o in row if o is not None}.values():
            if obj in s:
                s.expunge(obj)


def _rows(s: Session, lines: Subquery, history: bool) -> list[Row]:
    """The lines' items and results, in order."""
    return [(a, b, r) for a, b, r in s.execute(_rows_query(lines, history))]


def _rows_query(lines: Subquery, history: bool) -> Any:
    src, unit = aliased(Item), aliased(Item)
    on_result = Result.item_id == unit.id if history else and_(Result.item_id == unit.id, Result.is_current)
    return (
        select(src, unit, Result)
        .select_from(lines)
        .join(src, src.id == lines.c.src)
        .outerjoin(unit, unit.id == lines.c.unit)
        .outerjoin(Result, on_result)
        .order_by(
            lines.c.created_at, lines.c.custom_id, lines.c.src, lines.c.tail, lines.c.page, Result.version
        )
    )


def units_with_media(s: Session, job_id: uuid.UUID, limit: int) -> list[Item]:
    """The job's first ``limit`` prepared pages (units with a stored image), in submission order."""
    q = (
        select(Item)
        .where(Item.job_id == job_id, Item.parent_id.is_not(None), Item.media_key.is_not(None))
        .order_by(Item.created_at, Item.custom_id, Item.page)
        .limit(limit)
    )
    return list(s.scalars(q))


def job_is_terminal(job: Job) -> bool:
    return JobStatus(job.status) in JOB_TERMINAL


_SOURCE_COLUMNS = ("id", "job_id", "custom_id", "kind", "uri", "prompt", "status", "options")


def copy_sources(s: Session, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert a job's source items with COPY (one round trip, ~20x faster than row inserts for large
    jobs); ``rows`` hold ``_SOURCE_COLUMNS`` in order, the rest takes the column defaults."""
    cursor = s.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY items ({', '.join(_SOURCE_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
