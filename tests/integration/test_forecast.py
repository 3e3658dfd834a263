"""A job's start and finish forecast (jobs.scheduling.estimate) on real Postgres, with state built
directly: the fleet's pace from the pages ended in the last 600 s, split by priority class, tenant
weight and job, as the fair claim splits it.

The forecast is fleet-wide, so each test starts from an empty jobs table on the module's own database
(``simulated``: its clock may move without touching other tests)."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from jobs import clock
from jobs.config import Settings
from jobs.models import Item, Job
from jobs.schemas import ForecastOut
from jobs.service import JobService
from tests.integration import with_section
from tests.integration.conftest import service_on

# 600 pages ended in the window: a fleet pace of exactly 1 page a second.
ENDED = 600


@pytest.fixture
def service(simulated: Settings) -> JobService:
    service = service_on(simulated)
    with service.sessions() as s, s.begin():
        s.execute(delete(Job))
    return service


def _job(
    service: JobService,
    tenant: str,
    *,
    ready: int = 0,
    running: int = 0,
    succeeded: int = 0,
    queued_sources: int = 0,
    status: str = "running",
    priority: str = "normal",
) -> uuid.UUID:
    """A job of one prepared source with pages ready, running and succeeded (ended now), plus
    ``queued_sources`` sources not yet prepared."""
    job_id, src = uuid.uuid4(), uuid.uuid4()
    pages = ["ready"] * ready + ["running"] * running + ["succeeded"] * succeeded
    with service.sessions() as s, s.begin():
        started = clock.now(s) if status != "queued" else None
        s.add(_job_row(job_id, tenant, status, priority, started, 1 + queued_sources))
        s.flush()
        sources = [_item(job_id, f"doc-{i}", None, None, "queued") for i in range(queued_sources)]
        _insert(s, [_item(job_id, "doc", None, None, "prepared", src), *sources])
        _insert(s, [_item(job_id, "doc", src, n + 1, st) for n, st in enumerate(pages)])
    return job_id


def _job_row(
    job_id: uuid.UUID, tenant: str, status: str, priority: str, started: datetime | None, items: int
) -> Job:
    fixed = {"prompt": "p", "prompt_version": "v1", "model_id": "m", "request_hash": "h"}
    return Job(id=job_id, tenant=tenant, status=status, priority=priority, started_at=started,
               total_items=items, **fixed)  # fmt: skip


def _item(
    job_id: uuid.UUID,
    custom_id: str,
    parent: uuid.UUID | None,
    page: int | None,
    status: str,
    id_: uuid.UUID | None = None,
) -> dict[str, object]:
    kind = "source" if parent is None else "page"
    return {"id": id_ or uuid.uuid4(), "job_id": job_id, "parent_id": parent, "custom_id": custom_id,
            "kind": kind, "page": page, "status": status}  # fmt: skip


def _insert(s: Session, rows: list[dict[str, object]]) -> None:
    if rows:
        s.execute(insert(Item), rows)


def _forecast(service: JobService, tenant: str, job_id: uuid.UUID) -> ForecastOut | None:
    return service.get(tenant, job_id).forecast


def _seconds(service: JobService, at: datetime | None) -> float:
    """Seconds from the database's now to ``at``."""
    assert at is not None
    with service.sessions() as s:
        return (at - clock.now(s)).total_seconds()


def test_a_small_job_finishes_far_sooner_than_a_bulk_job(service: JobService) -> None:
    """Pace 1 page/s, two tenants of weight 1: each job gets 0.5 page/s. The bulk job's 3,000 open pages
    take 6,000 s, the small job's 20 take 40 s."""
    bulk = _job(service, "tenant-a", ready=2990, running=10, succeeded=ENDED)
    small = _job(service, "tenant-b", ready=20)
    big, little = _forecast(service, "tenant-a", bulk), _forecast(service, "tenant-b", small)
    assert big is not None and little is not None
    assert big.pages_per_second == pytest.approx(0.5) and little.pages_per_second == pytest.approx(0.5)
    assert _seconds(service, big.finishes_at) == pytest.approx(6000, abs=5)
    assert _seconds(service, little.finishes_at) == pytest.approx(40, abs=5)
    assert abs(_seconds(service, little.starts_at)) < 5  # started: its start time


def test_a_tenants_jobs_split_its_share(service: JobService) -> None:
    """Tenant b's two jobs split its half: 0.25 page/s each."""
    _job(service, "tenant-a", ready=100, succeeded=ENDED)
    first, second = _job(service, "tenant-b", ready=10), _job(service, "tenant-b", ready=10)
    for job_id in (first, second):
        f = _forecast(service, "tenant-b", job_id)
        assert f is not None and f.pages_per_second == pytest.approx(0.25)
        assert _seconds(service, f.finishes_at) == pytest.approx(40, abs=5)


def test_a_tenant_of_weight_3_gets_3_times_the_share(simulated: Settings, service: JobService) -> None:
    weighted = service_on(with_section(simulated, "fairness", tenant_weights={"tenant-a": 3.0}))
    bulk = _job(service, "tenant-a", ready=3000, succeeded=ENDED)
    small = _job(service, "tenant-b", ready=20)
    big, little = _forecast(weighted, "tenant-a", bulk), _forecast(weighted, "tenant-b", small)
    assert big is not None and little is not None
    assert (big.pages_per_second, little.pages_per_second) == (pytest.approx(0.75), pytest.approx(0.25))
    assert _seconds(service, big.finishes_at) == pytest.approx(4000, abs=5)
    assert _seconds(service, little.finishes_at) == pytest.approx(80, abs=5)


def test_a_low_job_starts_after_the_normal_work(service: JobService) -> None:
    """3,020 normal pages open at 1 page/s: the low job starts in ~3,020 s, then has the whole pace for
    its 50 pages; the normal jobs' shares do not count it."""
    bulk = _job(service, "tenant-a", ready=3000, succeeded=ENDED)
    _job(service, "tenant-b", ready=20)
    low = _job(service, "tenant-c", ready=50, status="queued", priority="low")
    f = _forecast(service, "tenant-c", low)
    assert f is not None and f.pages_per_second == pytest.approx(1.0)
    assert _seconds(service, f.starts_at) == pytest.approx(3020, abs=5)
    assert _seconds(service, f.finishes_at) == pytest.approx(3070, abs=5)
    normal = _forecast(service, "tenant-a", bulk)
    assert normal is not None and normal.pages_per_second == pytest.approx(0.5)


def test_an_unprepared_source_counts_as_one_page(service: JobService) -> None:
    """4 ready pages and 6 sources not yet prepared: 10 pages at the whole pace, until prep finds more."""
    job_id = _job(service, "tenant-a", ready=4, queued_sources=6, succeeded=ENDED)
    f = _forecast(service, "tenant-a", job_id)
    assert f is not None and _seconds(service, f.finishes_at) == pytest.approx(10, abs=5)


def test_a_finished_job_has_no_forecast(service: JobService) -> None:
    _job(service, "tenant-a", ready=10, succeeded=ENDED)
    done = _job(service, "tenant-b", succeeded=5, status="completed")
    cancelling = _job(service, "tenant-b", ready=5, status="cancelling")
    assert _forecast(service, "tenant-b", done) is None
    assert _forecast(service, "tenant-b", cancelling) is None


def test_no_page_ended_in_the_window_no_forecast(simulated: Settings, service: JobService) -> None:
    """The pages ended 601 s ago (the clock moved): no pace to estimate from."""
    job_id = _job(service, "tenant-a", ready=10, succeeded=ENDED)
    assert _forecast(service, "tenant-a", job_id) is not None
    with service.sessions() as s, s.begin():
        clock.advance(s, simulated, 601)
    assert _forecast(service, "tenant-a", job_id) is None
