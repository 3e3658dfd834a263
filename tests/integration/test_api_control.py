"""The API's control endpoints (cancel, retry, failed lines) and per-tenant limits (429). Bodies cut off
while they stream in: tests/security/test_body_limits.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sql
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from jobs import transitions
from jobs import units as units_
from jobs.config import Settings
from jobs.errors import CorruptMedia
from jobs.models import Item
from jobs.service import JobService, build_service
from jobs.status import ItemStatus, JobStatus
from jobs.sweeper import sweep
from tests.integration import age_job, db_now, with_limits

A = {"Authorization": "Bearer test-key"}
B = {"Authorization": "Bearer other-key"}


def _body(settings: Settings, n: int = 1) -> dict[str, object]:
    items = [{"custom_id": f"d{i}", "uri": f"s3://{settings.s3.bucket}/in/{i}.pdf"} for i in range(n)]
    return {"items": items}


def test_cancel_and_retry_endpoints(client: TestClient, settings: Settings) -> None:
    job = client.post("/v1/jobs", json=_body(settings, 2), headers=A).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=B).status_code == 404  # another tenant's
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=A)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"  # nothing was in flight
    lines = client.get(f"/v1/jobs/{job['id']}/results?status=cancelled", headers=A).text.splitlines()
    assert len(lines) == 2
    r = client.post(f"/v1/jobs/{job['id']}/retry", headers=A)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert client.get(f"/v1/jobs/{job['id']}/results?status=bogus", headers=A).status_code == 422


def _failed_job(client: TestClient, service: JobService, settings: Settings) -> uuid.UUID:
    """A completed job whose one source failed (unreadable), submitted through the API."""
    job_id = uuid.UUID(client.post("/v1/jobs", json=_body(settings), headers=A).json()["id"])
    item_id = _source(service, job_id).id
    assert service.begin_prep(item_id) is not None
    service.fail_items([item_id], CorruptMedia("truncated"))
    assert service.finalize(job_id)
    return job_id


def _source(service: JobService, job_id: uuid.UUID) -> Item:
    with service.sessions() as s:
        return s.scalars(sql.select(Item).where(Item.job_id == job_id)).one()


def test_a_cancel_while_a_prep_claims_the_first_source_does_not_deadlock(
    client: TestClient, settings: Settings
) -> None:
    """A prep claim locks its source, then moves the job from queued to running (JobService._begin_prep,
    step by step here). A cancel arriving between the two steps waits for the source; it must not hold
    the job's row meanwhile, or each waits on the other until Postgres aborts one (CI: a cancel right
    after a 10,000-item submit answered 503). Both finish: the claimed source runs on, to be stopped by
    its worker; the other is cancelled."""
    service = build_service(settings)
    job_id = uuid.UUID(client.post("/v1/jobs", json=_body(settings, 2), headers=A).json()["id"])
    claimed, other = (i.id for i in _sources(service, job_id))
    canceller, errors = _thread(lambda: service.cancel("tenant-a", job_id))
    with service.sessions() as s, s.begin():
        assert transitions.move_items(s, [claimed], ItemStatus.PREPARING)
        canceller.start()
        _until_waiting_on_a_row(service, canceller)
        assert transitions.move_job(s, job_id, JobStatus.RUNNING)
    canceller.join(30)
    assert not canceller.is_alive() and errors == []
    assert service.get("tenant-a", job_id).status == JobStatus.CANCELLING
    assert {i.id: i.status for i in _sources(service, job_id)} == {
        claimed: ItemStatus.PREPARING,
        other: ItemStatus.CANCELLED,
    }


def test_prep_recording_a_source_waits_for_the_source_before_it_holds_the_job(
    client: TestClient, settings: Settings
) -> None:
    """The other half of the lock order (jobs.transitions): a cancel holds a source it looked at while
    the source was being claimed, then waits for the job's row. Prep recording that source's pages
    (jobs.units) must wait for the source without holding the job's row meanwhile, or the two deadlock
    (bench.listing, cancelling a 100,000-item job: a 503). Here the source is held by the test; while
    prep waits for it, the job's row must be free."""
    service = build_service(settings)
    job_id = uuid.UUID(client.post("/v1/jobs", json=_body(settings, 1), headers=A).json()["id"])
    (source,) = (i.id for i in _sources(service, job_id))
    assert service.begin_prep(source) is not None
    prep, errors = _thread(lambda: service.finish_prep(source, [(1, "media/x/page-00001.png")]))
    with service.sessions() as holder, holder.begin():
        holder.execute(sql.select(Item).where(Item.id == source).with_for_update())
        prep.start()
        _until_waiting_on_a_row(service, prep)
        with service.sessions() as probe, probe.begin():  # FOR SHARE by prep would refuse this at once
            probe.execute(sql.text("SELECT 1 FROM jobs WHERE id = :j FOR UPDATE NOWAIT"), {"j": job_id})
    prep.join(30)
    assert not prep.is_alive() and errors == []
    assert {i.id: i.status for i in _sources(service, job_id) if i.parent_id is None} == {source: "prepared"}


def test_pages_recorded_while_a_cancel_runs_are_cancelled_with_the_rest(
    client: TestClient, settings: Settings
) -> None:
    """Prep records a chunk of pages under a share lock on the job's row (jobs.units). A cancel's first
    pass over the waiting items cannot see a chunk not yet committed; once the cancel holds the job's
    row, every chunk recorded before has committed, and its second pass cancels those pages too. With
    one pass they stayed ready in a cancelling job, claimed by no one (CI: an OpenAI batch stayed
    cancelling, the e2e system having no sweeper)."""
    service = build_service(settings)
    job_id = uuid.UUID(client.post("/v1/jobs", json=_body(settings, 1), headers=A).json()["id"])
    (source,) = (i.id for i in _sources(service, job_id))
    assert service.begin_prep(source) is not None
    canceller, errors = _thread(lambda: service.cancel("tenant-a", job_id))
    with service.sessions() as s, s.begin():  # prep's chunk, recorded while the cancel runs
        assert units_.add_units(s, source, [(1, "media/x/page-00001.png")])
        canceller.start()
        _until_waiting_on_a_row(service, canceller)  # its first pass is done; it waits for the job row
    canceller.join(30)
    assert not canceller.is_alive() and errors == []
    with service.sessions() as s:
        pages = list(
            s.scalars(sql.select(Item.status).where(Item.job_id == job_id, Item.parent_id.is_not(None)))
        )
    assert pages == [ItemStatus.CANCELLED]
    assert (
        service.get("tenant-a", job_id).status == JobStatus.CANCELLING
    )  # the source is still in prep's hands


def _thread(step: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """``step`` in a thread of its own, not started; what it raises goes to the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except BaseException as e:
            errors.append(e)

    return threading.Thread(target=run), errors


def _sources(service: JobService, job_id: uuid.UUID) -> list[Item]:
    with service.sessions() as s:
        return list(s.scalars(sql.select(Item).where(Item.job_id == job_id).order_by(Item.created_at)))


def _until_waiting_on_a_row(service: JobService, thread: threading.Thread) -> None:
    waits = sql.text(
        "SELECT count(*) FROM pg_locks WHERE locktype IN ('transactionid', 'tuple') AND NOT granted"
    )
    with service.sessions() as s:
        for _ in range(200):
            if s.scalar(waits) or not thread.is_alive():
                return
            thread.join(0.05)
    raise AssertionError("the cancel neither finished nor waited for the claimed source")


def test_a_retried_old_job_gets_a_fresh_expiry_window(client: TestClient, settings: Settings) -> None:
    """``vlmq retry`` calls this endpoint. A job retried after its expiry window (a day) runs again with
    a full window from now: the next sweep does not expire it and fail the retried item again."""
    service = build_service(settings)
    job_id = _failed_job(client, service, settings)
    age_job(service, job_id)
    r = client.post(f"/v1/jobs/{job_id}/retry", headers=A)
    assert r.status_code == 200 and r.json()["status"] == "running", r.text
    window = timedelta(seconds=settings.queue.job_expiry_seconds)
    fresh = db_now(service) + window - timedelta(minutes=1)
    assert datetime.fromisoformat(r.json()["expires_at"]) > fresh
    sweep(service)
    assert client.get(f"/v1/jobs/{job_id}", headers=A).json()["status"] == "running"
    assert _source(service, job_id).status == "queued"


def test_tenant_limits_answer_429_with_a_clear_body(settings: Settings) -> None:
    tenant = f"limits-{uuid.uuid4().hex[:6]}"
    keys = SecretStr(f"{tenant}-key:{tenant},other-{tenant}:other-{tenant}")
    busy = with_limits(settings, max_active_jobs_per_tenant=2, max_active_items_per_tenant=5)
    busy = busy.model_copy(update={"api": busy.api.model_copy(update={"keys": keys})})
    me, other = {"X-API-Key": f"{tenant}-key"}, {"X-API-Key": f"other-{tenant}"}
    with TestClient(create_app(busy)) as c:
        assert c.post("/v1/jobs", json=_body(settings, 2), headers=me).status_code == 202
        r = c.post("/v1/jobs", json=_body(settings, 4), headers=me)
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "tenant_limit_exceeded" and "the limit is 5" in err["message"]
        assert c.post("/v1/jobs", json=_body(settings, 3), headers=me).status_code == 202
        r = c.post("/v1/jobs", json=_body(settings, 1), headers=me)
        assert r.status_code == 429 and "2 unfinished jobs; the limit is 2" in r.json()["error"]["message"]
        assert c.post("/v1/jobs", json=_body(settings, 1), headers=other).status_code == 202  # per tenant


def test_disallowed_uris_are_refused_with_the_reason(client: TestClient, settings: Settings) -> None:
    items = [{"custom_id": "a", "uri": "https://example.com/a.pdf"}]
    r = client.post("/v1/jobs", json={"items": items}, headers=A)
    assert r.status_code == 422 and r.json()["error"]["code"] == "forbidden_uri"
    assert "scheme https:// is not allowed" in r.json()["error"]["message"]
