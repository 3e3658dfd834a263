"""Leases, the sweeper, cancel, retry, expiry, priorities and tenant limits on real Postgres, Redis and
S3 (the service in-process; tests/chaos runs the same with real worker processes)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select, text

from jobs.config import Settings
from jobs.errors import Conflict, CorruptMedia, NotFound
from jobs.models import Item, Job
from jobs.schemas import JobCreate
from jobs.service import JobService, build_service
from jobs.status import JobStatus
from jobs.sweeper import sweep
from tests.integration import age_job, db_now
from workers.context import WorkerContext
from workers.heartbeat import Heartbeat
from workers.infer import infer
from workers.inference.fake_engine import FakeEngine


@pytest.fixture
def service(settings: Settings) -> JobService:
    return build_service(settings)


@pytest.fixture
def broker(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis.url or "")
    yield client
    client.close()


def _qlen(broker: redis.Redis, settings: Settings, queue: str) -> int:
    return int(broker.llen(f"{settings.redis.key_prefix}{queue}"))


def _submit(service: JobService, n: int = 1, tenant: str = "tenant-a", **extra: object) -> uuid.UUID:
    bucket = service.store.bucket
    items = [{"custom_id": f"doc-{i}", "uri": f"s3://{bucket}/in/{i}.png"} for i in range(n)]
    job, _ = service.submit(tenant, JobCreate.model_validate({"items": items, **extra}))
    return job.id


def _items(service: JobService, job_id: uuid.UUID, units: bool = False) -> list[Item]:
    parent = Item.parent_id.is_not(None) if units else Item.parent_id.is_(None)
    with service.sessions() as s:
        q = select(Item).where(Item.job_id == job_id, parent).order_by(Item.custom_id, Item.page)
        return list(s.scalars(q))


def _sql(service: JobService, sql: str, **params: object) -> None:
    with service.sessions() as s, s.begin():
        s.execute(text(sql), params)


def _result() -> dict[str, object]:
    return {
        "reasoning": "r", "answer": "a", "raw_text": "<think>r</think><answer>a</answer>", "boxes": [],
        "flags": [], "finish_reason": "stop", "truncated": False, "answer_missing": False,
        "prompt_tokens": 1, "completion_tokens": 1, "model_id": "m", "engine": "test", "prompt_version": "v",
    }  # fmt: skip


def test_an_expired_lease_goes_back_to_waiting_then_fails_when_attempts_are_spent(
    service: JobService, settings: Settings, broker: redis.Redis
) -> None:
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    for attempt in range(1, settings.limits.max_attempts + 1):
        assert service.begin_prep(src.id) is not None  # a worker claims it, then dies: no heartbeat
        (held,) = _items(service, job_id)
        assert held.status == "preparing" and held.lease_until is not None and held.attempts == attempt
        _sql(service, "UPDATE items SET lease_until = now() - interval '1 second' WHERE id = :i", i=src.id)
        before = _qlen(broker, settings, "prep")
        report = sweep(service)
        (after,) = _items(service, job_id)
        assert after.error_code == "lease_expired" and after.lease_until is None
        if attempt < settings.limits.max_attempts:
            assert (after.status, report.leases_recovered) == ("queued", 1)
            assert _qlen(broker, settings, "prep") > before  # enqueued again at once
    assert (after.status, report.leases_failed) == ("failed", 1)
    assert service.get("tenant-a", job_id).status == "completed"  # the sweep finalized the job


def test_the_heartbeat_renews_leases_and_reports_a_cancelled_job(service: JobService) -> None:
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    service.begin_prep(src.id)
    _sql(service, "UPDATE items SET lease_until = now() + interval '1 second' WHERE id = :i", i=src.id)
    stopped: list[set[uuid.UUID]] = []
    beat = Heartbeat(service, [src.id], interval=60, on_stop=stopped.append)
    beat.beat()
    (held,) = _items(service, job_id)
    assert held.lease_until is not None and held.lease_until.timestamp() > time.time() + 60  # lease_seconds
    assert stopped == []
    assert service.cancel("tenant-a", job_id).status == "cancelling"  # one item in flight
    beat.beat()
    assert stopped == [{job_id}]


def test_after_a_broker_reset_every_waiting_item_is_enqueued_again(
    service: JobService, settings: Settings, broker: redis.Redis
) -> None:
    sweep(service)  # the marker key exists now
    job_id = _submit(service, n=3)
    for key in broker.scan_iter(match=f"{settings.redis.key_prefix}*"):
        broker.delete(key)  # this test run's share of a FLUSHALL
    report = sweep(service)
    assert report.broker_reset and report.requeued >= 3
    queued = [m for m in broker.lrange(f"{settings.redis.key_prefix}prep", 0, -1)]
    assert all(any(str(it.id).encode() in m for m in queued) for it in _items(service, job_id))
    assert not sweep(service).broker_reset  # once


def test_items_waiting_too_long_are_enqueued_again(service: JobService, broker: redis.Redis) -> None:
    sweep(service)
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    assert src.id not in _requeued_ids(service)  # fresh: its message is presumably on its way
    _sql(service, "UPDATE items SET updated_at = now() - interval '3 hours' WHERE id = :i", i=src.id)
    assert src.id in _requeued_ids(service)


def _requeued_ids(service: JobService) -> set[uuid.UUID]:
    sent: list[uuid.UUID] = []
    real = service.dispatcher

    class Recorder:
        def prep(self, item_id: uuid.UUID, priority: str = "normal") -> None:
            sent.append(item_id)

        def infer(self, unit_ids: list[uuid.UUID], priority: str = "normal") -> None:
            sent.extend(unit_ids)

        def broker_was_reset(self) -> bool:
            return False

    service.dispatcher = Recorder()
    try:
        sweep(service)
    finally:
        service.dispatcher = real
    return set(sent)


def test_cancel_is_cooperative(service: JobService) -> None:
    job_id = _submit(service, n=3)
    first, *rest = _items(service, job_id)
    assert service.begin_prep(first.id) is not None  # in flight
    job = service.cancel("tenant-a", job_id)
    assert job.status == "cancelling"
    assert {it.status for it in _items(service, job_id)[1:]} == {"cancelled"}
    assert service.begin_prep(rest[0].id) is None  # a late message finds it cancelled
    assert service.finish_prep(first.id, [(1, "media/x/page-1.png")]) == []  # the worker's check
    assert _items(service, job_id)[0].status == "cancelled" and not _items(service, job_id, units=True)
    assert service.finalize(job_id)
    assert service.cancel("tenant-a", job_id).status == "cancelled"  # idempotent
    with pytest.raises(NotFound):
        service.cancel("tenant-b", job_id)


def test_cancel_with_nothing_in_flight_ends_at_once(service: JobService) -> None:
    job_id = _submit(service, n=2)
    job = service.cancel("tenant-a", job_id)
    assert (job.status, job.request_counts.cancelled, job.request_counts.failed) == ("cancelled", 2, 0)
    with pytest.raises(Conflict, match="cancelled job cannot be retried"):
        service.retry("tenant-a", job_id)


def test_cancel_aborts_the_engine_mid_batch(service: JobService, settings: Settings) -> None:
    """A worker inside a (30 s) engine call: its heartbeat sees the cancel, aborts the requests, and the
    pages end cancelled with no result."""
    fast = settings.model_copy(update={"queue": settings.queue.model_copy(update={"heartbeat_seconds": 0.2})})
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    service.begin_prep(src.id)
    png = _png()
    key = service.store.put("media/test/cancel-page.png", png, "image/png")
    (batch,) = service.finish_prep(src.id, [(1, key)])
    engine = FakeEngine(latency=30)
    worker = threading.Thread(target=infer, args=(WorkerContext(fast, service, service.store), engine, batch))
    t0 = time.monotonic()
    worker.start()
    _wait(lambda: engine.calls == 1)
    assert service.cancel("tenant-a", job_id).status == "cancelling"
    worker.join(20)
    assert not worker.is_alive() and time.monotonic() - t0 < 20
    assert engine.aborted == {str(u) for u in batch}
    (unit,) = _items(service, job_id, units=True)
    assert unit.status == "cancelled"
    assert service.get("tenant-a", job_id).status == "cancelled"
    assert next(service.results("tenant-a", job_id)).answer is None


def test_retry_requeues_failed_items_only(service: JobService) -> None:
    job_id = _submit(service, n=2)
    bad, good = _items(service, job_id)
    service.begin_prep(bad.id)
    service.fail_items([bad.id], CorruptMedia("truncated"))
    service.begin_prep(good.id)
    (batch,) = service.finish_prep(good.id, [(1, "media/r/page-1.png")])
    (unit,) = service.claim_units(batch)
    service.complete_units([(unit, _result())])
    assert service.finalize(job_id)
    assert [line.custom_id for line in service.results("tenant-a", job_id, "failed")] == ["doc-0"]
    job = service.retry("tenant-a", job_id)
    assert (job.status, job.completed_at) == ("running", None)
    bad2, good2 = _items(service, job_id)
    assert (bad2.status, bad2.attempts, bad2.error_code) == ("queued", 0, None)
    assert good2.status == "succeeded"
    with pytest.raises(Conflict, match="no failed items"):
        service.retry("tenant-a", job_id)


def test_a_retry_between_a_finalizers_count_and_its_close_is_not_lost(
    service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the soak: a finalizer counted no open item, then (while it wrote the output files) a
    user's retry reopened a failed page, and the finalizer completed the job anyway, leaving the page
    ready in a completed job forever. The close counts again under the finalizer lock, which the
    reopen takes too: the job stays running for its reopened page."""
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    service.begin_prep(src.id)
    (batch,) = service.finish_prep(src.id, [(1, "media/f/page-1.png"), (2, "media/f/page-2.png")])
    u1, u2 = service.claim_units(batch)
    service.complete_units([(u1, _result())])
    service.fail_items([u2.id], CorruptMedia("unreadable page"))
    close = service.close_job

    def retried_meanwhile(
        job: uuid.UUID, end: JobStatus, when_done: bool = False, error: str | None = None
    ) -> bool:
        service.retry("tenant-a", job_id)  # another process, between the count and the close
        return close(job, end, when_done, error)

    monkeypatch.setattr(service, "close_job", retried_meanwhile)
    assert not service.finalize(job_id)
    assert service.get("tenant-a", job_id).status == "running"
    assert [u.status for u in _items(service, job_id, units=True)] == ["succeeded", "ready"]


def test_a_failed_page_is_retried_under_its_source(service: JobService) -> None:
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    service.begin_prep(src.id)
    (batch,) = service.finish_prep(src.id, [(1, "media/p/page-1.png"), (2, "media/p/page-2.png")])
    u1, u2 = service.claim_units(batch)
    service.complete_units([(u1, _result())])
    service.fail_items([u2.id], CorruptMedia("unreadable page"))
    assert service.finalize(job_id) and _items(service, job_id)[0].status == "failed"
    service.retry("tenant-a", job_id)
    assert _items(service, job_id)[0].status == "prepared"
    assert [u.status for u in _items(service, job_id, units=True)] == ["succeeded", "ready"]


def test_a_retry_gives_a_still_running_job_a_full_expiry_window(service: JobService) -> None:
    """A page failed while the job's other page still runs, and the job is near its expiry: the retried
    page gets a full window, as it would in a finished job (jobs.transitions.reopen_failed)."""
    job_id = _submit(service)
    (src,) = _items(service, job_id)
    service.begin_prep(src.id)
    (batch,) = service.finish_prep(src.id, [(1, "media/w/page-1.png"), (2, "media/w/page-2.png")])
    u1, _ = service.claim_units(batch)
    service.fail_items([u1.id], CorruptMedia("unreadable page"))
    age_job(service, job_id)
    job = service.retry("tenant-a", job_id)
    window = timedelta(seconds=service.settings.queue.job_expiry_seconds)
    assert job.status == "running" and job.expires_at is not None
    assert job.expires_at > db_now(service) + window - timedelta(minutes=1)


def test_an_expired_job_fails_its_open_items(service: JobService) -> None:
    job_id = _submit(service, n=2)
    first, _ = _items(service, job_id)
    service.begin_prep(first.id)
    _sql(service, "UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = :j", j=job_id)
    assert sweep(service).expired_jobs >= 1
    job = service.get("tenant-a", job_id)
    assert job.status == "expired" and (job.request_counts.expired, job.request_counts.failed) == (2, 0)
    assert {
        (line.status, line.error.code if line.error else None) for line in service.results(None, job_id)
    } == {("expired", "expired")}
    with service.sessions() as s:
        stored = s.get(Job, job_id)
        assert stored is not None and stored.output_key and stored.error_key
    assert service.finish_prep(first.id, [(1, "media/e/page-1.png")]) == []  # the late worker's result


def test_low_priority_work_goes_to_the_low_queues(
    service: JobService, settings: Settings, broker: redis.Redis
) -> None:
    before = _qlen(broker, settings, "prep-low")
    job_id = _submit(service, priority="low")
    assert _qlen(broker, settings, "prep-low") == before + 1
    assert service.get("tenant-a", job_id).priority == "low"


def _wait(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buf, "PNG")
    return buf.getvalue()
