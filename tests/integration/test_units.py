"""Recording a source's units chunk by chunk while it is prepared (jobs.units), on real Postgres: no unit
twice, nothing recorded after a cancel, a source that fails mid-stream keeps its job open until its
pages are done and shows its own error, and a retry prepares it again. The whole system with real
workers: tests/chaos/test_streaming.py."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from jobs import transitions
from jobs.config import Settings
from jobs.errors import CorruptMedia
from jobs.models import Item
from jobs.schemas import JobCreate
from jobs.service import JobService, build_service
from jobs.status import ITEM_IN_FLIGHT, ITEM_WAITING, ItemStatus
from jobs.sweeper import sweep
from tests.integration.reprocess_fixtures import result


@pytest.fixture
def service(settings: Settings) -> JobService:
    return build_service(settings)


def _source(service: JobService) -> tuple[uuid.UUID, uuid.UUID]:
    """(job id, source id) of a new one-PDF job whose source a worker has claimed."""
    items = [{"custom_id": "doc", "uri": f"s3://{service.store.bucket}/in/doc.pdf"}]
    job, _ = service.submit("tenant-a", JobCreate.model_validate({"items": items}))
    with service.sessions() as s:
        src = s.scalars(select(Item.id).where(Item.job_id == job.id)).one()
    assert service.begin_prep(src) is not None
    return job.id, src


def _pages(first: int, last: int) -> list[tuple[int, str]]:
    return [(p, f"media/u/page-{p}.png") for p in range(first, last + 1)]


def _units(service: JobService, source: uuid.UUID) -> dict[int, str]:
    with service.sessions() as s:
        return dict(s.execute(select(Item.page, Item.status).where(Item.parent_id == source)).all())


def test_chunks_are_recorded_once_and_finish_prep_returns_only_the_last(service: JobService) -> None:
    _, src = _source(service)
    first = service.add_units(src, _pages(1, 2))
    assert first is not None and len(first) == 2
    assert service.add_units(src, _pages(1, 2)) == first  # a re-prep: the same units, still ready
    service.claim_units(first[:1])
    assert service.add_units(src, _pages(1, 2)) == first[1:]  # a running unit is not sent again
    (last,) = service.finish_prep(src, _pages(3, 3), page_count=3, dispatched=first)
    assert len(last) == 1 and last[0] not in first
    assert _units(service, src) == {1: "running", 2: "ready", 3: "ready"}
    with service.sessions() as s:
        assert s.get(Item, src).page_count == 3  # type: ignore[union-attr]


def test_nothing_is_recorded_after_a_cancel(service: JobService) -> None:
    job_id, src = _source(service)
    assert service.add_units(src, _pages(1, 2))
    assert service.cancel("tenant-a", job_id).status == "cancelling"  # the source is in flight
    assert service.add_units(src, _pages(3, 4)) is None  # prep stops rendering
    assert _units(service, src) == {1: "cancelled", 2: "cancelled"}
    assert service.finalize(job_id) and service.get("tenant-a", job_id).status == "cancelled"


def test_the_last_chunk_of_a_source_failed_meanwhile_records_nothing(service: JobService) -> None:
    """Found by the soak: a job expired while a file was rendered. Between the expiry failing its items
    and closing the job (after its output files are written) the job still looks active, and the
    prep's last chunk was recorded: pages left ready in an expired job, for ever."""
    job_id, src = _source(service)
    assert service.add_units(src, _pages(1, 1))
    with service.sessions() as s, s.begin():  # control.expire's first step; the job is not closed yet
        failed = ITEM_WAITING | ITEM_IN_FLIGHT
        transitions.set_status(s, job_id, failed, ItemStatus.FAILED, error_code="expired", error_message="x")
    assert service.finish_prep(src, _pages(2, 3), page_count=3) == []
    assert _units(service, src) == {1: "failed"}


def test_a_source_whose_lease_was_lost_stops_its_first_worker(service: JobService) -> None:
    _, src = _source(service)
    with service.sessions() as s, s.begin():  # its worker stopped renewing the lease (stuck, cut off)
        s.execute(update(Item).where(Item.id == src).values(lease_until=func.now() - timedelta(seconds=1)))
    sweep(service)  # preparing -> queued, enqueued again for another worker
    assert service.add_units(src, _pages(1, 2), attempt=1) is None and _units(service, src) == {}
    again = service.begin_prep(src)  # another worker claims it: attempt 2
    assert again is not None and again.attempt == 2
    assert service.add_units(src, _pages(1, 2), attempt=1) is None  # the first worker still stops
    assert service.add_units(src, _pages(1, 2), attempt=again.attempt)
    assert _units(service, src) == {1: "ready", 2: "ready"}


def test_a_source_failing_mid_stream_waits_for_its_pages_and_shows_its_own_error(service: JobService) -> None:
    job_id, src = _source(service)
    ready = service.add_units(src, _pages(1, 2))
    assert ready is not None
    service.fail_items([src], CorruptMedia("page 3 cannot be rendered: page 2 not in document"))
    assert not service.finalize(job_id, [src])  # pages 1-2 are still to be inferred
    assert service.get("tenant-a", job_id).status == "running"
    for unit in service.claim_units(ready):
        service.complete_units([(unit, result())])
    assert service.finalize(job_id, [src])
    lines = list(service.results("tenant-a", job_id))
    assert [(x.page, x.status) for x in lines] == [(1, "succeeded"), (2, "succeeded"), (None, "failed")]
    assert lines[-1].error is not None and lines[-1].error.code == "corrupt_media"
    assert service.store.get(f"jobs/{job_id}/errors.jsonl").count(b"page 3 cannot be rendered") == 1
    # A retry prepares it again (its page count is unknown); the pages made stay as they are.
    service.retry("tenant-a", job_id)
    with service.sessions() as s:
        assert s.get(Item, src).status == "queued"  # type: ignore[union-attr]
    assert _units(service, src) == {1: "succeeded", 2: "succeeded"}
