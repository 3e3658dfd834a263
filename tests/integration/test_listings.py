"""Jobs submitted as a source (jobs.listings) against Postgres and the S3 test server, the broker in
memory so that each listing page is driven by the test: every matching object once, a page listed twice
stored once, a resubmitted prefix skipping what is done, pacing, cancel, the sweeper's resend, manifests
with bad lines, and the job that cannot complete while its listing goes on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sql
from fastapi.testclient import TestClient

from api.app import create_app
from jobs import listings, transitions
from jobs.adapters.db import session_factory
from jobs.adapters.storage import S3BlobStore
from jobs.config import Settings
from jobs.models import Item, Job, Listing
from jobs.schemas import JobCreate
from jobs.service import JobService
from jobs.status import ItemStatus, JobStatus
from jobs.sweeper import sweep
from tests.fakes import MemoryDispatcher

A = {"Authorization": "Bearer test-key"}


@pytest.fixture
def service(settings: Settings) -> JobService:
    small = settings.model_copy(update={"listing": settings.listing.model_copy(update={"page_size": 10})})
    return JobService(session_factory(small), S3BlobStore(small), MemoryDispatcher(), small)


@pytest.fixture
def root(settings: Settings) -> Iterator[str]:
    """A fresh prefix of the test bucket for this test's objects."""
    yield f"listing-{uuid.uuid4().hex[:8]}"


def _put(service: JobService, keys: list[str], body: bytes = b"%PDF-1.4 x") -> None:
    store = service.store
    assert isinstance(store, S3BlobStore)
    for key in keys:
        store.put(key, body)


def _submit(
    service: JobService, source: dict[str, object], tenant: str = "tenant-a", **extra: object
) -> uuid.UUID:
    job, created = service.submit(tenant, JobCreate.model_validate({"source": source, **extra}))
    assert created
    return job.id


def _list_all(service: JobService, job_id: uuid.UUID, limit: int = 100) -> int:
    """Run the listing's messages until none is left; how many pages were asked for."""
    dispatcher = service.dispatcher
    assert isinstance(dispatcher, MemoryDispatcher)
    for n in range(limit):
        if not dispatcher.take("list"):
            return n
        service.list_next(job_id)
    raise AssertionError("the listing did not end")


def _sources(service: JobService, job_id: uuid.UUID) -> dict[str, Item]:
    with service.sessions() as s:
        rows = s.scalars(sql.select(Item).where(Item.job_id == job_id, Item.parent_id.is_(None)))
        return {i.uri or "": i for i in rows}


def _listing(service: JobService, job_id: uuid.UUID) -> Listing:
    with service.sessions() as s:
        li = s.get(Listing, job_id)
        assert li is not None
        return li


def test_a_prefix_job_lists_every_matching_object_once_a_page_at_a_time(
    service: JobService, root: str
) -> None:
    bucket = service.settings.s3.bucket
    pdfs = [f"{root}/pdfs/{d}/doc-{i:02d}.pdf" for d in ("a", "b/c") for i in range(12)]
    _put(service, [*pdfs, f"{root}/pdfs/a/notes.txt", f"{root}/other/x.pdf"])
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/pdfs/**/*.pdf"})
    pages = _list_all(service, job_id)
    assert pages >= 3  # 25 keys under the prefix, 10 a page
    found = _sources(service, job_id)
    assert set(found) == {f"s3://{bucket}/{k}" for k in pdfs}
    assert all(i.status == ItemStatus.QUEUED and i.etag for i in found.values())
    li = _listing(service, job_id)
    assert (li.status, li.discovered, li.skipped) == ("done", 24, 0)
    assert service.get("tenant-a", job_id).request_counts.total == 24
    sent = service.dispatcher.take("prep")  # type: ignore[attr-defined]
    assert sorted(sent) == sorted(i.id for i in found.values())  # each to prep, once


def test_a_page_listed_twice_is_stored_once(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/{i}.png" for i in range(5)])
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    twice = listings.Lister(service.sessions, service.store.client, service.settings)  # type: ignore[attr-defined]
    first, second = twice.next_page(job_id), None
    with service.sessions() as s, s.begin():  # a redelivered message: the same page, from where it stood
        s.execute(sql.update(Listing).where(Listing.job_id == job_id).values(pages=0, status="listing"))
    second = twice.next_page(job_id)
    assert len(first.sources) == 5 and first.again_in is None
    assert second.sources == [] and len(_sources(service, job_id)) == 5


def test_a_resubmitted_prefix_skips_what_is_done_and_takes_what_changed(
    service: JobService, root: str
) -> None:
    bucket = service.settings.s3.bucket
    keys = [f"{root}/{i}.pdf" for i in range(4)]
    _put(service, keys)
    first = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    _list_all(service, first)
    _succeed(service, first)
    _put(service, [keys[0]], b"%PDF-1.4 changed")  # a new ETag
    _put(service, [f"{root}/new.pdf"])
    second = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    _list_all(service, second)
    assert set(_sources(service, second)) == {f"s3://{bucket}/{keys[0]}", f"s3://{bucket}/{root}/new.pdf"}
    assert (_listing(service, second).discovered, _listing(service, second).skipped) == (5, 3)
    third = _submit(service, {"prefix": f"s3://{bucket}/{root}/", "incremental": False})
    _list_all(service, third)
    assert len(_sources(service, third)) == 5
    other_prompt = _submit(service, {"prefix": f"s3://{bucket}/{root}/"}, prompt="Transcribe it.")
    _list_all(service, other_prompt)
    assert len(_sources(service, other_prompt)) == 5  # another prompt: nothing was done for it


def _succeed(service: JobService, job_id: uuid.UUID) -> None:
    """Every source of the job succeeded, by the moves a worker makes."""
    ids = [i.id for i in _sources(service, job_id).values()]
    with service.sessions() as s, s.begin():
        for target in (ItemStatus.PREPARING, ItemStatus.PREPARED, ItemStatus.SUCCEEDED):
            assert len(transitions.move_items(s, ids, target)) == len(ids)


def test_a_job_cannot_complete_while_its_listing_goes_on(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/{i:02d}.pdf" for i in range(15)])
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    service.dispatcher.take("list")  # type: ignore[attr-defined]
    service.list_next(job_id)  # the first page of 10
    _succeed(service, job_id)
    assert not service.finalize(job_id)  # five more are on their way
    assert service.get("tenant-a", job_id).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    _list_all(service, job_id)
    _succeed_waiting(service, job_id)
    assert service.finalize(job_id) or service.get("tenant-a", job_id).status == JobStatus.COMPLETED
    assert service.get("tenant-a", job_id).request_counts.completed == 15


def _succeed_waiting(service: JobService, job_id: uuid.UUID) -> None:
    with service.sessions() as s, s.begin():
        waiting = list(s.scalars(sql.select(Item.id).where(Item.job_id == job_id, Item.status == "queued")))
        for target in (ItemStatus.PREPARING, ItemStatus.PREPARED, ItemStatus.SUCCEEDED):
            transitions.move_items(s, waiting, target)


def test_a_listing_pauses_while_its_job_holds_enough_open_items(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/{i:02d}.pdf" for i in range(25)])
    paced = service.settings.model_copy(
        update={"listing": service.settings.listing.model_copy(update={"max_open_items": 10})}
    )
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    lister = listings.Lister(service.sessions, service.store.client, paced)  # type: ignore[attr-defined]
    assert len(lister.next_page(job_id).sources) == 10
    paused = lister.next_page(job_id)
    assert paused.sources == [] and paused.again_in == paced.listing.pause_seconds
    _succeed(service, job_id)
    assert len(lister.next_page(job_id).sources) == 10  # room again


def test_a_cancelled_job_stops_its_listing_and_ends(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/{i:02d}.pdf" for i in range(25)])
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    service.dispatcher.take("list")  # type: ignore[attr-defined]
    service.list_next(job_id)
    service.cancel("tenant-a", job_id)
    _list_all(service, job_id)
    assert _listing(service, job_id).status == "stopped"
    job = service.get("tenant-a", job_id)
    assert job.status == JobStatus.CANCELLED and job.request_counts.total == 10


def test_the_sweeper_sends_a_lost_listing_again(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/a.pdf"])
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    service.dispatcher.take("list")  # type: ignore[attr-defined]  # the message is lost
    assert sweep(service).listings_resent == 0  # not stale yet
    age = timedelta(seconds=service.settings.queue.requeue_after_seconds + 60)
    with service.sessions() as s, s.begin():
        s.execute(
            sql.update(Listing).where(Listing.job_id == job_id).values(updated_at=Listing.updated_at - age)
        )
    assert sweep(service).listings_resent == 1
    assert _list_all(service, job_id) == 1 and len(_sources(service, job_id)) == 1


def test_a_manifest_job_takes_its_lines_and_fails_the_bad_ones_alone(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    good = [{"uri": f"s3://{bucket}/{root}/{i}.pdf", "custom_id": f"doc-{i}"} for i in range(12)]
    lines = [json.dumps(x) for x in good] + [
        json.dumps({"custom_id": "no-uri"}),
        "{not json",
        json.dumps({"uri": "s3://someone-elses-bucket/x.pdf", "custom_id": "theirs"}),
        json.dumps({"uri": f"s3://{bucket}/{root}/again.pdf", "custom_id": "doc-0"}),  # repeated id
        json.dumps({"uri": f"s3://{bucket}/{root}/p.pdf", "options": {"pages": "1-2"}, "prompt": "Say hi."}),
    ]
    _put(service, [f"{root}/list.jsonl"], ("\n".join(lines) + "\n").encode())
    job_id = _submit(service, {"manifest": f"s3://{bucket}/{root}/list.jsonl"})
    _list_all(service, job_id)
    with service.sessions() as s:
        items = {i.custom_id: i for i in s.scalars(sql.select(Item).where(Item.job_id == job_id))}
    assert {f"doc-{i}" for i in range(12)} <= set(items) and items["doc-0"].uri.endswith("/0.pdf")
    assert items["theirs"].status == ItemStatus.FAILED and items["theirs"].error_code == "forbidden_uri"
    bad = [i for i in items.values() if i.error_code == listings.BAD_LINE]
    assert len(bad) == 2 and all(i.status == ItemStatus.FAILED for i in bad)
    assert all("manifest line" in (i.error_message or "") for i in bad)
    [p] = [i for i in items.values() if i.uri and i.uri.endswith("/p.pdf")]
    assert (p.prompt, p.options) == ("Say hi.", {"pages": "1-2"})
    assert len(items) == 12 + 2 + 1 + 1


def test_a_source_the_tenant_may_not_read_or_that_is_missing_is_refused_at_submission(
    settings: Settings, root: str
) -> None:
    bucket = settings.s3.bucket
    with TestClient(create_app(settings)) as c:
        for source, words in (
            ({"prefix": f"s3://{bucket}/results/**"}, "server's own storage"),
            ({"prefix": "s3://not-granted-bucket/x/*.pdf"}, "not granted"),
            ({"manifest": f"s3://{bucket}/{root}/missing.jsonl"}, "does not exist"),
            ({"prefix": f"s3://{bucket}/{root}/../x"}, ".."),
        ):
            r = c.post("/v1/jobs", json={"source": source}, headers=A)
            assert r.status_code == 422, (source, r.text)
            assert words in r.json()["error"]["message"], (source, r.text)
        both = {"items": [{"custom_id": "a", "uri": f"s3://{bucket}/a.pdf"}], "source": {"prefix": "s3://b/"}}
        assert c.post("/v1/jobs", json=both, headers=A).status_code == 422


def test_a_listing_job_does_not_count_against_its_tenants_item_limit(settings: Settings, root: str) -> None:
    """A corpus job of many items must not keep its tenant from submitting a small job meanwhile."""
    bucket = settings.s3.bucket
    tight = settings.model_copy(
        update={"limits": settings.limits.model_copy(update={"max_active_items_per_tenant": 5})}
    )
    service = JobService(session_factory(tight), S3BlobStore(tight), MemoryDispatcher(), tight)
    tenant = f"corpus-{uuid.uuid4().hex[:8]}"  # a tenant of its own: other tests' jobs do not count
    _put(service, [f"{root}/{i:02d}.pdf" for i in range(8)])
    job_id = _submit(service, {"prefix": f"s3://{bucket}/{root}/"}, tenant)
    _list_all(service, job_id)
    assert len(_sources(service, job_id)) == 8
    small = {"items": [{"custom_id": "one", "uri": f"s3://{bucket}/{root}/00.pdf"}]}
    job, _ = service.submit(tenant, JobCreate.model_validate(small))
    with service.sessions() as s:
        assert s.get(Job, job.id) is not None


def test_a_glob_over_a_granted_bucket_never_lists_the_servers_prefixes_or_other_tenants_uploads(
    settings: Settings,
) -> None:
    """The test tenants are granted the whole bucket, the server's own included: a pattern whose literal
    start is empty passes the submission check, and each listed key must be checked on its own."""
    bucket, uid = settings.s3.bucket, uuid.uuid4().hex[:8]
    wide = settings.model_copy(update={"listing": settings.listing.model_copy(update={"page_size": 1000})})
    service = JobService(session_factory(wide), S3BlobStore(wide), MemoryDispatcher(), wide)
    theirs, mine = f"uploads/tenant-b/{uid}-theirs.pdf", f"uploads/tenant-a/{uid}-mine.pdf"
    _put(
        service, [theirs, mine, f"results/{uid}-result.pdf", f"jobs/{uid}-output.pdf", f"in/{uid}-input.pdf"]
    )
    job_id = _submit(service, {"prefix": f"s3://{bucket}/**/{uid}-*.pdf"})
    _list_all(service, job_id, limit=1000)
    assert set(_sources(service, job_id)) == {f"s3://{bucket}/{mine}", f"s3://{bucket}/in/{uid}-input.pdf"}


def test_a_qa_manifest_fails_the_lines_without_a_question_alone(service: JobService, root: str) -> None:
    bucket = service.settings.s3.bucket
    lines = [
        json.dumps({"uri": f"s3://{bucket}/{root}/a.pdf", "prompt": "What is the total?"}),
        json.dumps({"uri": f"s3://{bucket}/{root}/b.pdf"}),
    ]
    _put(service, [f"{root}/qa.jsonl"], "\n".join(lines).encode())
    job_id = _submit(service, {"manifest": f"s3://{bucket}/{root}/qa.jsonl"}, options={"task": "qa"})
    _list_all(service, job_id)
    found = _sources(service, job_id)
    a, b = found[f"s3://{bucket}/{root}/a.pdf"], found[f"s3://{bucket}/{root}/b.pdf"]
    assert (a.status, a.prompt) == (ItemStatus.QUEUED, "What is the total?")
    assert (b.status, b.error_code) == (ItemStatus.FAILED, listings.BAD_LINE) and "needs a prompt" in (
        b.error_message or ""
    )


def test_a_resubmission_with_nothing_new_completes_at_once_with_no_items(
    service: JobService, root: str
) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/{i}.pdf" for i in range(3)])
    first = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    _list_all(service, first)
    _succeed(service, first)
    again = _submit(service, {"prefix": f"s3://{bucket}/{root}/"})
    _list_all(service, again)
    job = service.get("tenant-a", again)
    assert (job.status, job.request_counts.total) == (JobStatus.COMPLETED, 0)
    assert job.listing is not None and (job.listing.discovered, job.listing.skipped) == (3, 3)
    empty = _submit(service, {"prefix": f"s3://{bucket}/{root}/nothing-here/*.pdf"})
    _list_all(service, empty)
    assert service.get("tenant-a", empty).status == JobStatus.COMPLETED  # a glob that matches nothing


def test_a_source_gone_before_its_first_page_fails_the_job_with_the_reason(
    service: JobService, root: str
) -> None:
    bucket = service.settings.s3.bucket
    _put(service, [f"{root}/list.jsonl"], json.dumps({"uri": f"s3://{bucket}/{root}/a.pdf"}).encode())
    job_id = _submit(service, {"manifest": f"s3://{bucket}/{root}/list.jsonl"})
    service.store.delete(f"{root}/list.jsonl")  # after the submission's check
    _list_all(service, job_id)
    job = service.get("tenant-a", job_id)
    assert job.status == JobStatus.FAILED and job.listing is not None and job.listing.status == "failed"
    assert job.error and "list.jsonl" in job.error and "does not exist" in job.error
