"""The counts Postgres keeps as items change (jobs.tallies, migration 0014), attacked: whatever writes
items (inserts, any UPDATE, a job deleted, roll-ups racing writers), the kept counts equal a GROUP BY of
the items themselves, so the one counts query cannot drift from what is stored."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs import tallies
from jobs.config import Settings
from jobs.models import Item, ItemTally, Job
from jobs.service import JobService
from jobs.status import ITEM_TRANSITIONS
from jobs.sweeper import sweep
from migrations import alembic_config
from tests.conftest import create_database, drop_database
from tests.integration.conftest import service_on

MOVES = [(str(a), str(b)) for a, targets in ITEM_TRANSITIONS.items() for b in targets]
CODES = (None, None, "corrupt_media", "expired", "page_failed")
Key = tuple[uuid.UUID, bool, str, "str | None"]


@pytest.fixture
def service(settings: Settings) -> JobService:
    return service_on(settings)


def _job(s: Session, sources: int, pages: int) -> uuid.UUID:
    """A job of ``sources`` prepared sources, each with ``pages`` pages ready."""
    job_id = uuid.uuid4()
    fixed = {"prompt": "p", "prompt_version": "v1", "model_id": "m", "request_hash": "h"}
    # A core insert names only these columns (and those with defaults): the test's older revisions lack
    # the columns added since (an ORM add writes every mapped one).
    row = {"id": job_id, "tenant": "tenant-a", "status": "running", "total_items": sources, **fixed}
    s.execute(insert(Job).values(**row))
    src = [_row(job_id, None, f"d{i}", None, "prepared") for i in range(sources)]
    s.execute(insert(Item), src)
    units = [_row(job_id, x["id"], x["custom_id"], p + 1, "ready") for x in src for p in range(pages)]
    if units:
        s.execute(insert(Item), units)
    return job_id


def _row(
    job: uuid.UUID, parent: object, custom_id: object, page: int | None, status: str
) -> dict[str, object]:
    kind = "source" if parent is None else "page"
    return {"id": uuid.uuid4(), "job_id": job, "parent_id": parent, "custom_id": custom_id, "kind": kind,
            "page": page, "status": status}  # fmt: skip


def _truth(s: Session, jobs: list[uuid.UUID]) -> Counter[Key]:
    q = (
        select(Item.job_id, Item.parent_id.is_(None), Item.status, Item.error_code, func.count())
        .where(Item.job_id.in_(jobs))
        .group_by(Item.job_id, Item.parent_id.is_(None), Item.status, Item.error_code)
    )
    return Counter({(j, src, st, code): int(n) for j, src, st, code, n in s.execute(q)})


def _kept(s: Session, jobs: list[uuid.UUID]) -> Counter[Key]:
    return Counter({(j, src, st, code): n for j, src, st, code, n in tallies.by_status(s, jobs, None)})


def _shuffle(s: Session, jobs: list[uuid.UUID], rng: random.Random) -> None:
    """One random write of the kinds the system makes: an allowed move (with an error code or none) for
    some items, a lease renewed (no group moves), new pages, or items of two jobs in one statement."""
    kind = rng.choice(["move", "move", "renew", "add", "two_jobs"])
    job = rng.choice(jobs)
    if kind == "add":
        src = s.scalar(select(Item.id).where(Item.job_id == job, Item.parent_id.is_(None)).limit(1))
        top = s.scalar(select(func.max(Item.page)).where(Item.parent_id == src)) or 0
        s.execute(insert(Item), [_row(job, src, "x", top + 1 + i, "ready") for i in range(3)])
        return
    before, after = rng.choice(MOVES)
    mine = Item.job_id.in_(jobs if kind == "two_jobs" else [job])
    ids = select(Item.id).where(mine, Item.status == (before if kind != "renew" else Item.status))
    picked = Item.id.in_(ids.order_by(func.random()).limit(rng.randint(1, 25)).scalar_subquery())
    if kind == "renew":
        s.execute(update(Item).where(picked).values(lease_until=func.now()))
    else:
        s.execute(update(Item).where(picked).values(status=after, error_code=rng.choice(CODES)))


def test_kept_counts_equal_the_items_after_random_writes_and_roll_ups(service: JobService) -> None:
    rng = random.Random(25)
    with service.sessions() as s, s.begin():
        jobs = [_job(s, 5, 8), _job(s, 40, 1), _job(s, 1, 0)]
    for step in range(150):
        with service.sessions() as s, s.begin():
            _shuffle(s, jobs, rng)
            if step % 40 == 39:
                tallies.roll_up(s, jobs[:2])
    with service.sessions() as s:
        assert _kept(s, jobs) == _truth(s, jobs)
        before = s.scalar(select(func.count()).select_from(ItemTally).where(ItemTally.job_id.in_(jobs)))
    with service.sessions() as s, s.begin():
        tallies.roll_up(s, jobs)
    with service.sessions() as s:
        assert _kept(s, jobs) == _truth(s, jobs)
        rows = s.scalar(select(func.count()).select_from(ItemTally).where(ItemTally.job_id.in_(jobs)))
        assert rows == len(_truth(s, jobs)) < before  # a row a group, none for a group that emptied


def test_a_rolled_back_write_counts_nothing(service: JobService) -> None:
    with service.sessions() as s, s.begin():
        job = _job(s, 2, 4)
    with service.sessions() as s:
        s.begin()
        s.execute(update(Item).where(Item.job_id == job, Item.page.is_not(None)).values(status="running"))
        s.rollback()
    with service.sessions() as s:
        assert _kept(s, [job]) == _truth(s, [job]) == Counter({(job, True, "prepared", None): 2,
                                                                (job, False, "ready", None): 8})  # fmt: skip


def test_roll_ups_racing_writers_lose_and_double_nothing(service: JobService) -> None:
    """Writers move items while two threads roll the same job up over and over."""
    with service.sessions() as s, s.begin():
        jobs = [_job(s, 10, 10)]
    stop, errors = threading.Event(), []

    def roll() -> None:
        while not stop.is_set():
            try:
                with service.sessions() as s, s.begin():
                    tallies.roll_up(s, jobs)
            except Exception as e:  # a deadlock here would be a defect: report it
                errors.append(e)

    threads = [threading.Thread(target=roll) for _ in range(2)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(120):
            with service.sessions() as s, s.begin():
                _shuffle(s, jobs, rng)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    with service.sessions() as s:
        assert _kept(s, jobs) == _truth(s, jobs)


def test_a_deleted_job_takes_its_counts_with_it(service: JobService) -> None:
    with service.sessions() as s, s.begin():
        job, other = _job(s, 3, 2), _job(s, 2, 2)
    with service.sessions() as s, s.begin():
        s.execute(delete(Job).where(Job.id == job))  # its items go by ON DELETE CASCADE
        s.execute(delete(Item).where(Item.job_id == other, Item.parent_id.is_not(None), Item.page == 2))
    with service.sessions() as s:
        assert not s.scalar(select(func.count()).select_from(ItemTally).where(ItemTally.job_id == job))
        left = Counter({(other, True, "prepared", None): 2, (other, False, "ready", None): 2})
        assert _kept(s, [other]) == _truth(s, [other]) == left


def test_the_sweeper_rolls_up_busy_jobs_and_the_counts_query_reads_the_same(service: JobService) -> None:
    with service.sessions() as s, s.begin():
        job = _job(s, 1, 200)
        s.execute(update(Item).where(Item.job_id == job, Item.page.is_not(None)).values(status="running"))
    for page in range(1, 101):  # a hundred statements: a hundred rows to sum, before the sweep
        with service.sessions() as s, s.begin():
            s.execute(update(Item).where(Item.job_id == job, Item.page == page).values(status="succeeded"))
    with service.sessions() as s:
        before = repo.counts(s, job, sources=False)
        assert s.scalar(select(func.count()).select_from(ItemTally).where(ItemTally.job_id == job)) > 64
    assert sweep(service).tallies_rolled_up >= 1
    with service.sessions() as s:
        assert repo.counts(s, job, sources=False) == before
        assert (before.completed, before.total) == (100, 200)
        assert s.scalar(select(func.count()).select_from(ItemTally).where(ItemTally.job_id == job)) == 3


def test_the_counts_query_reads_no_item_rows(service: JobService) -> None:
    """The plan of the one counts query touches item_tallies only: never the items table."""
    with service.sessions() as s, s.begin():
        job = _job(s, 1, 3)
    captured: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        captured.append((statement, params))

    with service.sessions() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", grab)
        try:
            repo.counts(s, job, sources=False)
        finally:
            event.remove(engine, "before_cursor_execute", grab)
        statement, params = captured[-1]
        plan = "\n".join(r[0] for r in s.connection().exec_driver_sql("EXPLAIN " + statement, params))
    assert "item_tallies" in plan and " items" not in plan, plan


def test_the_migration_counts_the_items_already_there() -> None:
    """An existing database upgraded to 0014: the items stored before the triggers are counted once."""
    name = f"vlmq_tally_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    engine = create_engine(url)
    try:
        cfg = alembic_config(url)
        command.upgrade(cfg, "0013")
        with Session(engine) as s, s.begin():
            jobs = [_job(s, 3, 4), _job(s, 2, 0)]
            s.execute(update(Item).where(Item.job_id == jobs[0], Item.page == 1).values(status="running"))
        command.upgrade(cfg, "head")
        with Session(engine) as s:
            assert _kept(s, jobs) == _truth(s, jobs) and sum(_kept(s, jobs).values()) == 3 + 12 + 2
    finally:
        engine.dispose()
        drop_database(name)
