"""Fair scheduling on real Postgres (jobs.scheduling.fairness): a claim takes the work whose turn it is,
not the work a message named. A small job passes a bulk one of another tenant and of the same tenant,
weights and caps hold, the low class waits for the normal one, nothing starves, prep is shared the same
way, and concurrent claims never take one item twice."""

from __future__ import annotations

import io
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from sqlalchemy import delete, func, select, update

from jobs.config import Settings, get_settings
from jobs.models import Item, Job
from jobs.service import JobService, build_service
from jobs.status import ItemStatus, JobStatus
from tests.conftest import migrated_database
from tests.fakes import FakeEngine
from workers import infer
from workers.context import WorkerContext


@pytest.fixture(scope="module")
def fair_db() -> Iterator[str]:
    """A database of this module's own: a claim in turn sees every waiting item, other tests' too."""
    with migrated_database(f"vlmq_fair_{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.fixture
def service(settings: Settings, fair_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobService]:
    monkeypatch.setenv("VLMQ_DB__URL", fair_db)
    get_settings.cache_clear()
    service = build_service(get_settings())
    with service.sessions() as s, s.begin():
        s.execute(delete(Job))  # and their items: each test starts with nothing waiting
    yield service
    service.sessions.kw["bind"].dispose()


def _job(
    service: JobService, tenant: str, pages: int, priority: str = "normal", sources: int = 1,
    waiting: ItemStatus = ItemStatus.READY,
) -> uuid.UUID:  # fmt: skip
    """A running job whose ``sources`` sources hold ``pages`` pages in all, waiting for inference (or,
    ``waiting`` QUEUED, ``sources`` sources waiting for prep and no pages)."""
    job_id = uuid.uuid4()
    with service.sessions() as s, s.begin():
        s.add(Job(id=job_id, tenant=tenant, status=str(JobStatus.RUNNING), prompt="p", prompt_version="v",
                  model_id="m", request_hash="h", total_items=sources, priority=priority))  # fmt: skip
        s.flush()
        source_status = ItemStatus.PREPARED if waiting == ItemStatus.READY else waiting
        srcs = [Item(id=uuid.uuid4(), job_id=job_id, custom_id=f"d{i}", kind="source", uri="s3://b/x.pdf",
                     status=str(source_status)) for i in range(sources)]  # fmt: skip
        s.add_all(srcs)
        s.flush()
        if waiting == ItemStatus.READY:
            s.add_all(
                Item(job_id=job_id, parent_id=srcs[p % sources].id, custom_id=srcs[p % sources].custom_id,
                     kind="page", page=p + 1, media_key=f"media/{p}.png", status=str(ItemStatus.READY))
                for p in range(pages)
            )  # fmt: skip
    return job_id


def _jobs_of(service: JobService, unit_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    with service.sessions() as s:
        rows = {i: j for i, j in s.execute(select(Item.id, Item.job_id).where(Item.id.in_(unit_ids)))}
    return [rows[u] for u in unit_ids]


def _claim(service: JobService, n: int) -> list[uuid.UUID]:
    return [w.job_id for w in service.claim_next(n).taken]


def test_a_small_job_of_another_tenant_passes_a_bulk_job_at_the_next_claim(service: JobService) -> None:
    bulk = _job(service, "tenant-a", 200)
    assert set(_claim(service, 8)) == {bulk}  # the bulk job runs alone
    small = _job(service, "tenant-b", 1)
    claimed = service.claim_next(8)
    assert [w.job_id for w in claimed.taken].count(small) == 1
    assert claimed.taken[0].job_id == small  # and the engine is told to serve it first
    assert claimed.taken[0].rank < min(w.rank for w in claimed.taken[1:])


def test_a_small_job_of_the_same_tenant_passes_its_bulk_job(service: JobService) -> None:
    bulk = _job(service, "tenant-a", 200)
    _claim(service, 16)
    small = _job(service, "tenant-a", 2)
    first = service.claim_next(2).taken
    assert [w.job_id for w in first] == [small, small]
    assert set(_claim(service, 4)) == {bulk}


def test_the_turn_is_the_claim_not_the_message(service: JobService) -> None:
    """The task path: an inference message names the bulk job's pages, yet the worker infers the small
    job's page, whose turn it is (this fails with claims by the message's ids)."""
    bulk = _job(service, "tenant-a", 40)
    with service.sessions() as s:
        named = list(s.scalars(select(Item.id).where(Item.job_id == bulk, Item.status == "ready").limit(8)))
    small = _job(service, "tenant-b", 1)
    ctx = WorkerContext(service.settings, service, service.store)
    _media(service, 40)
    seen: list[str] = []
    engine = FakeEngine(lambda r: seen.append(r.request_id) or "<think>t</think><answer>a</answer>")
    lane = infer.infer(ctx, engine, named, in_turn=True)
    assert lane.taken == 8
    assert small in _jobs_of(service, [uuid.UUID(r) for r in seen])
    with service.sessions() as s:
        left = s.scalar(select(Item.status).where(Item.job_id == small, Item.parent_id.is_not(None)))
    assert left == "succeeded"


def test_tenants_share_by_weight(service: JobService) -> None:
    service.settings.fairness.tenant_weights = {"tenant-a": 3.0}
    a, b = _job(service, "tenant-a", 400), _job(service, "tenant-b", 400)
    taken = Counter(_claim(service, 80))
    assert (taken[a], taken[b]) == (60, 20)


def test_equal_tenants_alternate_and_a_tenants_jobs_take_turns(service: JobService) -> None:
    a1, a2, b = _job(service, "tenant-a", 100), _job(service, "tenant-a", 100), _job(service, "tenant-b", 100)
    taken = Counter(_claim(service, 40))
    assert taken[b] == 20 and taken[a1] == taken[a2] == 10


def test_a_bulk_job_keeps_moving_while_small_jobs_keep_coming(service: JobService) -> None:
    bulk = _job(service, "tenant-a", 500)
    served = Counter()
    for i in range(30):  # a small job of another tenant before every claim
        _job(service, f"small-{i % 3}", 1)
        served.update(_claim(service, 4))
    assert served[bulk] >= 30  # three of every four claims' pages at least: no starvation


def test_low_work_waits_for_normal_work(service: JobService) -> None:
    low = _job(service, "tenant-b", 20, priority="low")
    normal = _job(service, "tenant-a", 10)
    assert _claim(service, 16) == [normal] * 10 + [low] * 6
    assert min(w.rank for w in service.claim_next(4).taken) >= 1_000_000  # low class in the engine too


def test_a_tenant_cap_holds_and_says_so(service: JobService) -> None:
    service.settings.fairness.max_units_in_flight_per_tenant = 10
    a, b = _job(service, "tenant-a", 100), _job(service, "tenant-b", 5)
    first = service.claim_next(16)
    assert Counter(w.job_id for w in first.taken) == {a: 10, b: 5} and first.capped
    again = service.claim_next(8)
    assert again.taken == [] and again.capped
    service.complete_units([(w, _result()) for w in first.taken if w.job_id == a][:3])
    assert [w.job_id for w in service.claim_next(8).taken] == [a] * 3


def test_prep_is_taken_in_turn_and_capped(service: JobService) -> None:
    bulk = _job(service, "tenant-a", 0, sources=50, waiting=ItemStatus.QUEUED)
    first = service.begin_next_prep().taken
    assert [w.job_id for w in first] == [bulk]
    small = _job(service, "tenant-b", 0, sources=1, waiting=ItemStatus.QUEUED)
    assert [w.job_id for w in service.begin_next_prep().taken] == [small]
    service.settings.fairness.max_sources_preparing_per_tenant = 2
    assert [w.job_id for w in service.begin_next_prep().taken] == [bulk]
    capped = service.begin_next_prep()
    assert capped.taken == [] and capped.capped


def test_concurrent_claims_never_take_an_item_twice(service: JobService) -> None:
    for tenant in ("tenant-a", "tenant-b", "tenant-c"):
        _job(service, tenant, 60)
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: [w.id for w in service.claim_next(8).taken], range(30)))
    ids = [u for c in claims for u in c]
    assert len(ids) == len(set(ids)) == 180
    with service.sessions() as s:
        assert s.scalar(select(Item.id).where(Item.status == "ready")) is None


def test_a_claim_records_the_queue_wait(service: JobService) -> None:
    from prometheus_client import REGISTRY

    def count() -> float:
        labels = {"stage": "gpu", "tenant": "tenant-w", "size": "small"}
        return REGISTRY.get_sample_value("vlmq_queue_wait_seconds_count", labels) or 0.0

    before = count()
    job = _job(service, "tenant-w", 3)
    with service.sessions() as s, s.begin():  # they have waited a minute
        s.execute(update(Item).where(Item.job_id == job).values(updated_at=Item.updated_at - _minute()))
    service.claim_next(3)
    assert count() - before == 3
    labels = {"stage": "gpu", "tenant": "tenant-w", "size": "small", "le": "30.0"}
    assert REGISTRY.get_sample_value("vlmq_queue_wait_seconds_bucket", labels) == before  # none under 30 s


def _minute():  # type: ignore[no-untyped-def]
    from datetime import timedelta

    return timedelta(minutes=1)


def _result() -> dict[str, object]:
    return {"reasoning": "r", "answer": "a", "raw_text": "t", "finish_reason": "stop", "truncated": False,
            "answer_missing": False, "prompt_tokens": 1, "completion_tokens": 1, "model_id": "m",
            "engine": "fake", "prompt_version": "v"}  # fmt: skip


def test_a_capped_word_of_work_is_handed_on_not_dropped(
    service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task path under a tenant cap: a message whose claim the cap held back sends its unused word
    on (a retry after fairness.recheck_seconds, doubling), so the waiting pages are not forgotten."""
    from workers import context
    from workers.tasks import infer_units

    monkeypatch.setenv("VLMQ_FAIRNESS__MAX_UNITS_IN_FLIGHT_PER_TENANT", "4")
    get_settings.cache_clear()
    context.reset()
    ctx = context.get_context()
    engine = FakeEngine(lambda r: "<think>t</think><answer>a</answer>")
    monkeypatch.setattr("workers.inference.factory._engine", engine)
    sent: list[dict[str, object]] = []
    monkeypatch.setattr(infer_units, "retry", lambda **kw: sent.append(kw) or RuntimeError("retry"))
    _job(ctx.service, "tenant-a", 12)
    _media(ctx.service, 12)
    elsewhere = ctx.service.claim_next(4).taken  # another worker holds the tenant's 4
    word = [str(uuid.uuid4()) for _ in range(8)]
    with pytest.raises(RuntimeError, match="retry"):
        infer_units(word)  # capped, nothing taken: the whole word goes on
    assert engine.requests == [] and sent[-1]["args"] == [word] and sent[-1]["countdown"] == 2.0
    ctx.service.complete_units([(w, _result()) for w in elsewhere])
    with pytest.raises(RuntimeError, match="retry"):
        infer_units(word)  # 4 taken up to the cap; the other 4 of the word go on
    assert len(engine.requests) == 4 and sent[-1]["args"] == [word[:4]]
    context.reset()


def _media(service: JobService, pages: int) -> None:
    png = io.BytesIO()
    Image.new("RGB", (28, 28), "white").save(png, "PNG")
    for p in range(pages):
        service.store.put(f"media/{p}.png", png.getvalue(), "image/png")


def test_a_page_given_back_waits_out_its_backoff_and_its_word_is_handed_on(service: JobService) -> None:
    """After a transient failure the oldest page would be every claim's first pick: it is not claimed
    again before its retry_at (1, 2, 4 ... s), and a claim that finds only such work says so (its word
    is handed on, as under a cap), so nothing waits without a message."""
    from jobs.errors import StorageUnavailable

    job = _job(service, "tenant-a", 3)
    first = service.claim_next(1).taken
    assert service.give_back([first[0].id], StorageUnavailable("S3 down")) == [first[0].id]
    again = service.claim_next(8)
    assert first[0].id not in [w.id for w in again.taken] and len(again.taken) == 2 and again.capped
    with service.sessions() as s, s.begin():  # its backoff passes
        s.execute(update(Item).where(Item.job_id == job).values(retry_at=Item.retry_at - _minute()))
    assert [w.id for w in service.claim_next(8).taken] == [first[0].id]


class _GatedEngine(FakeEngine):
    """The fake engine behind a claim gate (workers.inference.gate), as the vLLM engine has one: its
    ``places`` free places are what the gate measures."""

    def __init__(self, places: int) -> None:
        from workers.inference.gate import ClaimGate

        super().__init__(lambda r: "<think>t</think><answer>a</answer>")
        self.places = places
        self.gate = ClaimGate(lambda: self.places, ahead=0, urgent_below=256, poll_s=0.05)


def test_a_full_engine_is_claimed_for_only_with_urgent_work(service: JobService) -> None:
    """The task path with a claim gate: while the engine has no place, the worker claims neither the
    bulk job's pages nor anything else ranked behind an engine's worth of work, only the small job of a
    tenant with nothing in flight (urgent); with places, it claims in turn again. Without the gate the
    full engine would be handed the bulk job's pages (the first claim below takes 8)."""
    ctx = WorkerContext(service.settings, service, service.store)
    bulk = _job(service, "tenant-a", 400)
    _media(service, 400)
    engine = _GatedEngine(places=64)
    lane = infer.infer(ctx, engine, [uuid.uuid4()], in_turn=True)
    assert lane.taken == 8  # room: a batch in turn, the bulk job's
    service.claim_next(300)  # the bulk job fills the engine: its ranks are now far behind
    engine.places = 0
    small = _job(service, "tenant-b", 1)
    seen: list[str] = []
    engine.answer = lambda r: seen.append(r.request_id) or "<think>t</think><answer>a</answer>"
    lane = infer.infer(ctx, engine, [uuid.uuid4()], in_turn=True)
    assert lane.taken == 1 and _jobs_of(service, [uuid.UUID(r) for r in seen]) == [small]
    assert engine.gate.reserved == 0  # handed over: nothing left reserved
    with service.sessions() as s:
        waiting = s.scalar(select(func.count()).where(Item.job_id == bulk, Item.status == "ready"))
    assert waiting == 400 - 8 - 300  # no bulk page was claimed for the full engine
