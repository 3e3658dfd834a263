"""The service's state machine on real Postgres: duplicate deliveries, retries, failure caps, finalizing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from jobs.config import Settings
from jobs.errors import CorruptMedia, EngineError
from jobs.models import Event, Item, Job
from jobs.schemas import JobCreate
from jobs.service import JobService, build_service
from jobs.storage import S3BlobStore
from tests.integration.reprocess_fixtures import result


@pytest.fixture
def service(settings: Settings) -> JobService:
    return build_service(settings)


def _submit(service: JobService, n: int = 1) -> uuid.UUID:
    bucket = service.store.bucket
    req = JobCreate.model_validate(
        {"items": [{"custom_id": f"doc-{i}", "uri": f"s3://{bucket}/in/{i}.pdf"} for i in range(n)]}
    )
    job, created = service.submit("tenant-a", req)
    assert created
    return job.id


def _sources(service: JobService, job_id: uuid.UUID) -> list[Item]:
    with service.sessions() as s:
        return list(s.scalars(select(Item).where(Item.job_id == job_id, Item.parent_id.is_(None))))


def _job(service: JobService, job_id: uuid.UUID) -> Job:
    with service.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_duplicate_deliveries_do_nothing_twice(service: JobService) -> None:
    job_id = _submit(service)
    (src,) = _sources(service, job_id)
    work = service.begin_prep(src.id)
    assert work is not None and service.begin_prep(src.id) is None  # second delivery: already claimed
    assert _job(service, job_id).status == "running"
    pages = [(1, "media/x/page-1.png"), (2, "media/x/page-2.png")]
    (batch,) = service.finish_prep(src.id, pages)
    assert service.finish_prep(src.id, pages) == [batch]  # re-run: the same units, no duplicates
    units = service.claim_units(batch)
    assert len(units) == 2 and service.claim_units(batch) == []
    for u in units:
        assert service.complete_unit(u, result())
        assert not service.complete_unit(u, result(answer="again"))  # late duplicate is refused
    assert service.finalize(job_id)
    assert not service.finalize(job_id)  # only one finalizer wins
    job = service.get("tenant-a", job_id)
    assert job.status == "completed"
    assert (job.request_counts.completed, job.page_counts.completed) == (1, 2)
    assert [line.answer for line in service.results("tenant-a", job_id)] == ["a", "a"]
    keys = {_job(service, job_id).output_key, _job(service, job_id).error_key}
    assert keys == {f"jobs/{job_id}/output.jsonl", f"jobs/{job_id}/errors.jsonl"}
    assert service.store.get(f"jobs/{job_id}/output.jsonl").count(b"\n") == 2


def test_transient_failures_retry_then_fail_with_the_last_reason(service: JobService) -> None:
    job_id = _submit(service)
    (src,) = _sources(service, job_id)
    service.begin_prep(src.id)
    (batch,) = service.finish_prep(src.id, [(1, "media/y/page-1.png")])
    limit = service.settings.limits.max_attempts
    for attempt in range(1, limit + 1):
        (unit,) = service.claim_units(batch)
        back = service.give_back([unit.id], EngineError(f"CUDA error {attempt}"))
        assert back == ([unit.id] if attempt < limit else [])
    service.finalize(job_id)
    line = next(service.results("tenant-a", job_id))
    assert line.status == "failed" and line.error is not None
    assert (line.error.code, line.error.message) == ("engine_error", f"CUDA error {limit}")
    job = service.get("tenant-a", job_id)
    assert job.status == "completed" and job.request_counts.failed == 1


def test_a_bad_source_fails_alone(service: JobService) -> None:
    job_id = _submit(service, n=2)
    bad, good = _sources(service, job_id)
    service.begin_prep(bad.id)
    service.fail_items([bad.id], CorruptMedia("not a readable PDF: truncated"))
    assert not service.finalize(job_id)  # the other source is still open
    service.begin_prep(good.id)
    (batch,) = service.finish_prep(good.id, [(1, "media/z/page-1.png")])
    (unit,) = service.claim_units(batch)
    service.complete_unit(unit, result())
    assert service.finalize(job_id)
    lines = {line.custom_id: line for line in service.results("tenant-a", job_id)}
    assert lines[bad.custom_id].error is not None and lines[bad.custom_id].error.code == "corrupt_media"
    assert lines[good.custom_id].status == "succeeded"
    with service.sessions() as s:
        kinds = set(s.scalars(select(Event.kind).where(Event.job_id == job_id)))
    assert {"job.submitted", "item.status", "item.error", "job.status"} <= kinds


def test_unreachable_s3_puts_claimed_units_back(
    service: JobService, settings: Settings, tiny_model_dir
) -> None:  # type: ignore[no-untyped-def]
    """S3 down while an inference batch loads its pages: the units go back to ready, not stuck running."""
    from jobs.errors import RetryableError
    from workers.context import WorkerContext
    from workers.infer import infer
    from workers.inference.transformers_engine import TransformersEngine

    job_id = _submit(service)
    (src,) = _sources(service, job_id)
    service.begin_prep(src.id)
    (batch,) = service.finish_prep(src.id, [(1, "media/q/page-1.png"), (2, "media/q/page-2.png")])
    dead = settings.model_copy(
        update={"s3": settings.s3.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})}
    )
    ctx = WorkerContext(dead, service, S3BlobStore(dead))
    with pytest.raises(RetryableError, match="S3 unreachable"):
        infer(ctx, TransformersEngine(str(tiny_model_dir), "tiny"), batch)
    with service.sessions() as s:
        units = list(s.scalars(select(Item).where(Item.parent_id == src.id)))
    assert {(u.status, u.attempts) for u in units} == {("ready", 1)}
