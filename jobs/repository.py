"""All SQL. Every state change is one compare-and-set UPDATE ... WHERE status IN (allowed sources),
so concurrent or repeated deliveries of the same message cannot move a row twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Integer,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import Subquery

from jobs.clock import sql_now
from jobs.models import Event, Item, Job, Result
from jobs.status import (
    ITEM_TERMINAL,
    JOB_TERMINAL,
    ItemStatus,
    JobStatus,
    item_sources_for,
    job_sources_for,
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
    moved = list(s.scalars(stmt))
    for it in moved:
        add_event(s, it.job_id, "item.status", item_id=it.id, to_status=str(target))
    return moved


def move_job(s: Session, job_id: uuid.UUID, target: JobStatus, values: dict[str, Any] | None = None) -> bool:
    sources = [str(x) for x in job_sources_for(target)]
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources))
        .values(status=str(target), updated_at=sql_now(), **(values or {}))
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    moved = s.scalar(stmt) is not None
    if moved:
        add_event(s, job_id, "job.status", to_status=str(target))
    return moved


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


def settle_sources(s: Session, job_id: uuid.UUID, only: Sequence[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Prepared sources whose units are all terminal become succeeded, failed if any unit failed, or
    cancelled if (no unit failed and) any unit was cancelled. ``only``: just these sources (a worker
    settles the sources it touched; checking every source of a 10,000-item job after each batch would
    make a job quadratic)."""
    if only is None:
        return list(s.scalars(_SETTLE_ALL, {"the_job": job_id}))
    return list(s.scalars(_SETTLE_ONLY, {"the_job": job_id, "only": list(only)}))


def _settle_statement(only: bool) -> Any:
    """settle_sources' UPDATE, built once (every batch settles its sources: building the statement
    each time cost more CPU than running it), its job and sources as parameters."""
    unit = aliased(Item)
    terminal = [str(x) for x in ITEM_TERMINAL]
    open_units = exists().where(unit.parent_id == Item.id, unit.status.not_in(terminal))
    failed_units = exists().where(unit.parent_id == Item.id, unit.status == str(ItemStatus.FAILED))
    cancelled_units = exists().where(unit.parent_id == Item.id, unit.status == str(ItemStatus.CANCELLED))
    return (
        update(Item)
        .where(Item.job_id == bindparam("the_job"), Item.status == str(ItemStatus.PREPARED), ~open_units)
        .where(Item.id.in_(bindparam("only", expanding=True)) if only else true())
        .values(
            status=case(
                (failed_units, str(ItemStatus.FAILED)),
                (cancelled_units, str(ItemStatus.CANCELLED)),
                else_=str(ItemStatus.SUCCEEDED),
            ),
            error_code=case((failed_units, PAGE_FAILED), else_=None),
            error_message=case((failed_units, "one or more pages failed; see the page errors"), else_=None),
            updated_at=sql_now(),
        )
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    )


_SETTLE_ALL, _SETTLE_ONLY = _settle_statement(False), _settle_statement(True)


def lock_job_finalize(s: Session, job_id: uuid.UUID) -> None:
    """A transaction-scoped advisory lock per job, taken first: finalizers of one job run one after
    the other, each seeing what the one before it committed. An advisory lock, not the job's row, so
    that nothing else (claims, prep, cancels, which lock rows) ever waits for it or deadlocks with it."""
    key = int.from_bytes(job_id.bytes[:8], "big", signed=True)
    s.execute(select(func.pg_advisory_xact_lock(key)))


def open_items(s: Session, job_id: uuid.UUID) -> int:
    """The job's items not terminal: sources and units alike, since a source that failed while it
    was being prepared (a later page could not be rendered) may still have earlier pages running."""
    terminal = [str(x) for x in ITEM_TERMINAL]
    q = select(func.count()).where(Item.job_id == job_id, Item.status.not_in(terminal))
    return int(s.scalar(q) or 0)


def counts(s: Session, job_id: uuid.UUID, sources: bool) -> dict[str, int]:
    """Items by status, for sources (parent NULL) or units."""
    parent = Item.parent_id.is_(None) if sources else Item.parent_id.is_not(None)
    q = select(Item.status, func.count()).where(Item.job_id == job_id, parent).group_by(Item.status)
    return {status: int(n) for status, n in s.execute(q)}


def result_rows(s: Session, job_id: uuid.UUID, history: bool = False) -> list[Row]:
    """(source, unit, current result) for every page, plus (source, None, None) for sources with no units
    and, after its pages, for a source that failed itself once some of its pages were made (a later page
    could not be rendered, its job expired while it was prepared): that error is no page's.
    With ``history``, one row per result version of each page instead of the current one only.

    Ordered by source submission order then page, so a results file reads like the input.
    """
    return _rows(s, _lines(job_id), history)


def result_rows_page(s: Session, job_id: uuid.UUID, limit: int, offset: int) -> tuple[list[Row], int]:
    """Rows ``offset`` to ``offset + limit`` of ``result_rows(s, job_id)`` and how many it has in all,
    cut and counted in SQL: the results page of a 10,000-page job reads its 50 rows, not the job."""
    lines = _lines(job_id)
    total = int(s.scalar(select(func.count()).select_from(lines)) or 0)
    return _rows(s, lines, False, limit, offset), total


def _lines(job_id: uuid.UUID) -> Subquery:
    """A job's result lines as SQL, unordered: one per unit, one for a source without units, and a
    source's own error line after its units (``tail`` 1) when it failed for a reason of its own."""
    src, unit = aliased(Item), aliased(Item)
    keys = (src.created_at.label("created_at"), src.custom_id.label("custom_id"), src.id.label("src"))
    mine = (src.job_id == job_id, src.parent_id.is_(None))
    has_units = exists().where(unit.parent_id == src.id)
    no_unit, no_page = cast(null(), Uuid).label("unit"), cast(null(), Integer).label("page")
    own = and_(
        has_units,
        src.status == str(ItemStatus.FAILED),
        or_(src.error_code.is_(None), src.error_code != PAGE_FAILED),
    )
    return union_all(
        select(*keys, unit.id.label("unit"), literal(0).label("tail"), unit.page.label("page"))
        .join(unit, unit.parent_id == src.id)
        .where(*mine),
        select(*keys, no_unit, literal(0).label("tail"), no_page).where(*mine, ~has_units),
        select(*keys, no_unit, literal(1).label("tail"), no_page).where(*mine, own),
    ).subquery()


def _rows(s: Session, lines: Subquery, history: bool, limit: int | None = None, offset: int = 0) -> list[Row]:
    """The lines' items and results, in order (a page of them: ``limit``, ``offset``)."""
    src, unit = aliased(Item), aliased(Item)
    on_result = Result.item_id == unit.id if history else and_(Result.item_id == unit.id, Result.is_current)
    q = (
        select(src, unit, Result)
        .select_from(lines)
        .join(src, src.id == lines.c.src)
        .outerjoin(unit, unit.id == lines.c.unit)
        .outerjoin(Result, on_result)
        .order_by(
            lines.c.created_at, lines.c.custom_id, lines.c.src, lines.c.tail, lines.c.page, Result.version
        )
        .limit(limit)
        .offset(offset)
    )
    return [(a, b, r) for a, b, r in s.execute(q)]


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
