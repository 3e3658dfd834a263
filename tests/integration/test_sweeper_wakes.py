"""The sweeper's word for waiting work, per job and kind (jobs.wakes), attacked on real Postgres, Redis and
S3 with the clock moved (a database of this module's own): a job whose every message was lost completes
on the word the sweeper sends once ``requeue_after_seconds`` have passed, however small a pass's budget;
a job of 10,000 waiting items is woken without one of its rows written (the per-item rule UPDATEd each);
work in flight, fresh work and work woken lately get no second word."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from PIL import Image
from sqlalchemy import func, select, text

from jobs import clock
from jobs.adapters.dispatch import FAN_OUT_TASK, INFER_TASK, PREP_TASK
from jobs.config import Settings
from jobs.models import Item, Result
from jobs.schemas import JobCreate
from jobs.service import JobService, build_service
from jobs.sweeper import sweep
from tests.fakes import MemoryDispatcher
from tests.integration import with_section
from tests.integration.conftest import service_on
from workers import infer, prep
from workers.context import WorkerContext
from workers.inference.fake_engine import FakeEngine

QUEUES = ("prep", "prep-low", "gpu", "gpu-low")


@pytest.fixture
def broker(simulated: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(simulated.redis.url or "")
    yield client
    client.close()


def _service(settings: Settings, batch: int = 10_000) -> JobService:
    """The real service (Redis, S3) on the module's database; ``batch``: queue.sweep_batch. No nightly
    catch-up: its message would be one more on the queues counted here."""
    quiet = with_section(settings, "reprocess", catch_up_s=0)
    return build_service(with_section(quiet, "queue", sweep_batch=batch))


def _later(service: JobService, seconds: float | None = None) -> None:
    """The whole stack ``seconds`` older (default: just past ``requeue_after_seconds``)."""
    step = seconds if seconds is not None else service.settings.queue.requeue_after_seconds + 60
    with service.sessions() as s, s.begin():
        clock.advance(s, service.settings, step)


def _lose_every_message(broker: redis.Redis, settings: Settings) -> None:
    """The queues' keys deleted, Redis' epoch marker kept: a loss the sweeper cannot see as a reset."""
    for name in QUEUES:
        broker.delete(settings.redis.key_prefix + name)


def _queued(broker: redis.Redis, settings: Settings) -> int:
    return sum(int(broker.llen(settings.redis.key_prefix + name)) for name in QUEUES)


def _work_off(service: JobService, broker: redis.Redis) -> int:
    """Be the workers: take every message off the queues, those they send too, and do what its task does
    (workers.tasks: a claim in turn, whatever ids it names); how many were taken."""
    ctx, engine, taken = WorkerContext(service.settings, service, service.store), FakeEngine(latency=0), 0
    while (raw := _pop(broker, service.settings)) is not None:
        task, args = raw
        taken += 1
        if task == PREP_TASK:
            prep.prepare(ctx)
        elif task == INFER_TASK:
            infer.infer(ctx, engine, [uuid.UUID(u) for u in args[0]], in_turn=True)
        elif task == FAN_OUT_TASK:
            for item_id in args[0]:
                service.dispatcher.prep(uuid.UUID(item_id), args[1])
    return taken


def _pop(broker: redis.Redis, settings: Settings) -> tuple[str, list[object]] | None:
    """The oldest message of the first queue that has one: (task name, args) of Celery's Redis message."""
    for name in QUEUES:
        raw = broker.rpop(settings.redis.key_prefix + name)
        if raw is not None:
            message = json.loads(raw)
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            return message["headers"]["task"], args
    return None


def _submit(service: JobService, n: int) -> uuid.UUID:
    png = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(png, "PNG")
    tag = uuid.uuid4().hex[:8]
    keys = [service.store.put(f"in/wake-{tag}-{i}.png", png.getvalue(), "image/png") for i in range(n)]
    items = [{"custom_id": f"img-{i}", "uri": f"s3://{service.store.bucket}/{k}"} for i, k in enumerate(keys)]
    job, _ = service.submit("tenant-a", JobCreate.model_validate({"items": items}))
    return job.id


def _results(service: JobService, job_id: uuid.UUID) -> tuple[int, int]:
    """(current results, units) of the job: exactly one each when it is done."""
    with service.sessions() as s:
        results = s.scalar(select(func.count()).where(Result.job_id == job_id, Result.is_current))
        units = s.scalar(select(func.count()).where(Item.job_id == job_id, Item.parent_id.is_not(None)))
    return int(results or 0), int(units or 0)


@pytest.mark.parametrize("batch", [10_000, 5])
def test_a_job_whose_messages_were_all_lost_completes_on_the_sweepers_word(
    simulated: Settings, broker: redis.Redis, batch: int
) -> None:
    """12 sources, every message deleted from Redis. Before ``requeue_after_seconds`` nothing is sent
    (their words may be on their way); after it, one pass wakes the job and the workers finish it with
    no other clock move: a word for each source, not one for the job. With a budget of 5 a pass, the
    rest is owed and sent by the next passes, not another ``requeue_after_seconds`` later."""
    service = _service(simulated, batch)
    sweep(service)  # Redis' epoch marker set: the loss below is not a reset
    job_id = _submit(service, 12)
    _lose_every_message(broker, simulated)
    assert sweep(service).requeued == 0 and _queued(broker, simulated) == 0
    _later(service)
    for _ in range(6):  # a pass, then the workers; budget 5: 12 sources' words over three passes
        sweep(service)
        _work_off(service, broker)
    job = service.get("tenant-a", job_id)
    assert job.status == "completed", job
    assert (job.request_counts.completed, job.request_counts.failed) == (12, 0)
    assert _results(service, job_id) == (12, 12)  # one result a page, none twice


def test_a_job_with_a_lost_page_word_completes_on_the_units_word(
    simulated: Settings, broker: redis.Redis
) -> None:
    """Prep ran, then every inference message was lost: the job's units (not its sources) are woken."""
    service = _service(simulated)
    sweep(service)
    job_id = _submit(service, 3)
    ctx = WorkerContext(service.settings, service, service.store)
    for _ in range(3):
        prep.prepare(ctx)
    _lose_every_message(broker, simulated)
    assert service.get("tenant-a", job_id).page_counts.completed == 0
    _later(service)
    report = sweep(service)
    assert report.requeued == 3 and _queued(broker, simulated) == 1  # 3 pages: one inference message
    _work_off(service, broker)
    assert service.get("tenant-a", job_id).status == "completed"
    assert _results(service, job_id) == (3, 3)


N = 10_000


def _bulk(service: JobService, age_s: float) -> uuid.UUID:
    """A running job of ``N`` queued sources that became waiting ``age_s`` ago, made by set-based SQL (a
    submission of 10,000 items through the service would take most of the test's time)."""
    job = uuid.uuid4()
    with service.sessions() as s, s.begin():
        s.execute(
            text(
                "INSERT INTO jobs (id, tenant, status, prompt, prompt_version, model_id, request_hash,"
                " total_items, expires_at) VALUES (:j, 'tenant-bulk', 'running', 'p', 'v', 'm', 'h', :n,"
                " vlmq_now() + interval '30 days')"
            ),
            {"j": job, "n": N},
        )
        s.execute(
            text(
                "INSERT INTO items (id, job_id, custom_id, kind, uri, status, created_at, updated_at)"
                " SELECT gen_random_uuid(), :j, 'b-' || g, 'source', 's3://nowhere/' || g, 'queued',"
                " vlmq_now() - make_interval(secs => :age), vlmq_now() - make_interval(secs => :age)"
                " FROM generate_series(1, :n) g"
            ),
            {"j": job, "n": N, "age": age_s},
        )
    return job


def _versions(service: JobService, job_id: uuid.UUID) -> dict[uuid.UUID, tuple[str, object]]:
    """Each item's row version (xmin: any UPDATE makes a new one) and updated_at."""
    with service.sessions() as s:
        q = text("SELECT id, xmin::text, updated_at FROM items WHERE job_id = :j")
        return {i: (x, at) for i, x, at in s.execute(q, {"j": job_id})}


def _sent_for(dispatcher: MemoryDispatcher, job_ids: set[uuid.UUID], service: JobService) -> list[uuid.UUID]:
    """The ids the sweeper's prep and inference messages named that belong to ``job_ids``."""
    ids = dispatcher.take("prep") + dispatcher.take("infer")
    with service.sessions() as s:
        mine = set(s.scalars(select(Item.id).where(Item.job_id.in_(job_ids), Item.id.in_(ids))))
    return [i for i in ids if i in mine]


def test_ten_thousand_waiting_items_are_woken_without_writing_one(simulated: Settings) -> None:
    """The cost model: a pass that wakes a job of 10,000 waiting sources writes none of their rows (the
    per-item rule UPDATEd each: a non-HOT update through every index of items), sends a word for each,
    and the next pass sends nothing."""
    service = service_on(simulated)
    dispatcher = service.dispatcher
    assert isinstance(dispatcher, MemoryDispatcher)
    age = simulated.queue.requeue_after_seconds + 600
    job_id = _bulk(service, age)
    before = _versions(service, job_id)
    assert sweep(service).requeued >= N
    sent = _sent_for(dispatcher, {job_id}, service)
    assert len(sent) == N and set(sent) == set(before)  # one word a waiting source, each named once
    assert _versions(service, job_id) == before  # not one row written: same xmin, same updated_at
    sweep(service)
    assert _sent_for(dispatcher, {job_id}, service) == []  # woken: no second word within requeue_after
    _later(service, age)
    sweep(service)
    assert len(_sent_for(dispatcher, {job_id}, service)) == N  # still idle a period later: woken again
    _cancel(service, job_id)


def _cancel(service: JobService, job_id: uuid.UUID) -> None:
    """End a test's job: the module's later tests sweep the same database."""
    with service.sessions() as s, s.begin():
        s.execute(text("UPDATE items SET status = 'cancelled' WHERE job_id = :j"), {"j": job_id})
        s.execute(text("UPDATE jobs SET status = 'cancelled' WHERE id = :j"), {"j": job_id})


def test_work_in_flight_fresh_work_and_a_reset(simulated: Settings) -> None:
    """No word while some of the job's work of that kind is in flight (words reach it) or while its next
    waiting item is younger than ``requeue_after_seconds``; after a broker reset, word of all of it,
    ``sweep_batch`` a pass: what a pass could not send is owed and goes out in the next one."""
    service = service_on(simulated)
    dispatcher = service.dispatcher
    assert isinstance(dispatcher, MemoryDispatcher)
    job_id = _bulk(service, simulated.queue.requeue_after_seconds + 600)
    with service.sessions() as s, s.begin():  # one source claimed: in flight
        s.execute(
            text(
                "UPDATE items SET status = 'preparing', attempts = 1, lease_until = vlmq_now() + interval"
                " '1 day' WHERE id = (SELECT id FROM items WHERE job_id = :j ORDER BY created_at LIMIT 1)"
            ),
            {"j": job_id},
        )
    sweep(service)
    assert _sent_for(dispatcher, {job_id}, service) == []
    fresh = _bulk(service, 60)
    sweep(service)
    assert _sent_for(dispatcher, {fresh}, service) == []
    dispatcher.broker_was_reset = lambda: True  # type: ignore[attr-defined]
    assert sweep(service).broker_reset
    budget = simulated.queue.sweep_batch
    assert len(_sent_for(dispatcher, {job_id, fresh}, service)) == budget  # a pass's budget at most
    dispatcher.broker_was_reset = lambda: False  # type: ignore[attr-defined]
    sweep(service)  # the rest is owed: sent now, in flight or fresh as it is
    assert len(_sent_for(dispatcher, {job_id, fresh}, service)) == 2 * N - 1 - budget
    sweep(service)
    assert _sent_for(dispatcher, {job_id, fresh}, service) == []
    _cancel(service, job_id)
    _cancel(service, fresh)
