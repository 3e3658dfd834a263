"""The service's state machine on real Postgres: duplicate deliveries, retries, failure caps, finalizing,
a batch's results stored in one transaction (versions, history, rows of different column sets)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from jobs import repository as repo
from jobs import transitions
from jobs.adapters.storage import S3BlobStore
from jobs.config import Settings
from jobs.errors import CorruptMedia, EngineError
from jobs.models import Event, Item, Job, Result
from jobs.schemas import JobCreate
from jobs.service import JobService, build_service
from jobs.work import UnitWork
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
        assert service.complete_units([(u, result())])
        assert not service.complete_units([(u, result(answer="again"))])  # late duplicate is refused
    assert service.finalize(job_id)
    assert not service.finalize(job_id)  # only one finalizer wins
    job = service.get("tenant-a", job_id)
    assert job.status == "completed"
    assert (job.request_counts.completed, job.page_counts.completed) == (1, 2)
    assert [line.answer for line in service.results("tenant-a", job_id)] == ["a", "a"]
    keys = {_job(service, job_id).output_key, _job(service, job_id).error_key}
    assert keys == {f"jobs/{job_id}/output.jsonl", f"jobs/{job_id}/errors.jsonl"}
    assert service.store.get(f"jobs/{job_id}/output.jsonl").count(b"\n") == 2


def test_two_workers_settling_the_last_two_sources_at_once_complete_the_job(
    service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker settles its own source, then counts what is still open. Both at the same moment
    (forced here: each waits after its settle for the other, up to 2 s) must not each count the other's
    source as open and leave a finished job running (found on the GPU: 32 batches ending together)."""
    job_id = _submit(service, 2)
    sources = _sources(service, job_id)
    for src in sources:
        service.begin_prep(src.id)
        (batch,) = service.finish_prep(src.id, [(1, f"media/{src.custom_id}/page-1.png")])
        (unit,) = service.claim_units(batch)
        assert service.complete_units([(unit, result())])
    both = threading.Barrier(2)
    settle = transitions.settle_sources

    def settle_then_wait(
        s: Session, job: uuid.UUID, only: Sequence[uuid.UUID] | None = None
    ) -> list[uuid.UUID]:
        settled = settle(s, job, only)
        with contextlib.suppress(threading.BrokenBarrierError):  # fixed: the other waits for our commit
            both.wait(timeout=2)
        return settled

    monkeypatch.setattr(transitions, "settle_sources", settle_then_wait)
    with ThreadPoolExecutor(2) as pool:
        ended = list(pool.map(lambda src: service.finalize(job_id, [src.id]), sources))
    assert sorted(ended) == [False, True]  # the second finalizer saw the first's source settled
    assert _job(service, job_id).status == "completed"


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
    service.complete_units([(unit, result())])
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


def _running_units(service: JobService, n: int) -> tuple[uuid.UUID, list[UnitWork]]:
    """A job of one source whose ``n`` pages are claimed (running, at version 1), in page order."""
    job_id = _submit(service)
    (src,) = _sources(service, job_id)
    service.begin_prep(src.id)
    (batch,) = service.finish_prep(src.id, [(i, f"media/b/page-{i}.png") for i in range(1, n + 1)])
    return job_id, sorted(service.claim_units(batch), key=lambda u: u.page)


def _result_rows(service: JobService, item_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Result]]:
    """Every result row of these items (history included), oldest version first."""
    rows: dict[uuid.UUID, list[Result]] = {i: [] for i in item_ids}
    with service.sessions() as s:
        q = select(Result).where(Result.item_id.in_(item_ids)).order_by(Result.version)
        for r in s.scalars(q):
            rows[r.item_id].append(r)
    return rows


def _status(service: JobService, item_id: uuid.UUID) -> str:
    with service.sessions() as s:
        item = s.get(Item, item_id)
        assert item is not None
        return item.status


def test_complete_units_stores_only_the_units_still_running(service: JobService) -> None:
    """A batch of three whose middle page failed meanwhile: the other two are stored in one go, the
    failed one keeps its failure and gets no result."""
    job_id, (a, b, c) = _running_units(service, 3)
    service.fail_items([b.id], EngineError("CUDA error: out of memory"))
    done = [(a, result(answer="one")), (b, result(answer="two")), (c, result(answer="three"))]
    assert service.complete_units(done) == [a.id, c.id]
    rows = _result_rows(service, [a.id, b.id, c.id])
    assert rows[b.id] == []
    for unit, answer in ((a, "one"), (c, "three")):
        (row,) = rows[unit.id]
        assert (row.is_current, row.version, row.job_id, row.answer) == (True, 1, job_id, answer)
    assert [_status(service, u.id) for u in (a, b, c)] == ["succeeded", "failed", "succeeded"]
    assert service.finalize(job_id)
    job = service.get("tenant-a", job_id)
    assert (job.page_counts.completed, job.page_counts.failed) == (2, 1)


def test_a_batch_is_stored_once_per_version_and_a_new_version_keeps_the_old_as_history(
    service: JobService,
) -> None:
    """A redelivered batch at the same version is refused; run again (claimed at version 2), the units
    get a new current result each and their first stays as history."""
    _, units = _running_units(service, 2)
    ids = [u.id for u in units]
    first = [(u, result(answer=f"v1 page {u.page}")) for u in units]
    assert service.complete_units(first) == ids
    assert service.complete_units(first) == []  # a redelivered task: the units are no longer running
    assert service.complete_units([(u, result(answer="late")) for u in units]) == []
    with service.sessions() as s, s.begin():  # the pages wait again, as for a re-run
        # A succeeded page never waits again in the state machine (reprocessing recomputes it beside its
        # result; jobs/status.py): staged here with Postgres' move check off for this transaction.
        s.execute(text("SET LOCAL session_replication_role = replica"))
        s.execute(update(Item).where(Item.id.in_(ids)).values(status="ready"))
    again = service.claim_units(ids)
    assert {u.version for u in again} == {2}
    assert service.complete_units([(u, result(answer=f"v2 page {u.page}")) for u in again]) == [
        u.id for u in again
    ]
    for u in units:
        rows = _result_rows(service, [u.id])[u.id]
        assert [(r.version, r.is_current, r.answer) for r in rows] == [
            (1, False, f"v1 page {u.page}"),
            (2, True, f"v2 page {u.page}"),
        ]


def test_upsert_results_keeps_one_current_row_per_item(service: JobService) -> None:
    """Version 2 of two items in one call: each item's version 1 becomes history; the same call again
    (a redelivery) rewrites the same rows, adding none."""
    job_id, (a, b) = _running_units(service, 2)

    def rows(version: int) -> list[dict[str, object]]:
        return [
            {"job_id": job_id, "item_id": u.id, "version": version, **result(answer=f"v{version} {u.page}")}
            for u in (a, b)
        ]

    for batch in (rows(1), rows(2), rows(2)):
        with service.sessions() as s, s.begin():
            repo.upsert_results(s, batch)
    stored = _result_rows(service, [a.id, b.id])
    for u in (a, b):
        assert [(r.version, r.is_current, r.answer) for r in stored[u.id]] == [
            (1, False, f"v1 {u.page}"),
            (2, True, f"v2 {u.page}"),
        ]


def test_upsert_results_stores_rows_of_different_column_sets_in_one_call(service: JobService) -> None:
    """One row with a payload key, model revision and settings, one without: both are stored (one
    INSERT per column set), each with its own values and the defaults for what it left out."""
    job_id, (a, b) = _running_units(service, 2)
    full = {
        "job_id": job_id, "item_id": a.id, "version": 1, **result(answer="full"),
        "payload_key": "results/x/a/v1.json", "model_revision": "rev-1", "settings": {"max_new_tokens": 8},
        "settings_hash": "abc",
    }  # fmt: skip
    bare = {"job_id": job_id, "item_id": b.id, "version": 1, **result(answer="bare")}
    with service.sessions() as s, s.begin():
        repo.upsert_results(s, [full, bare])
    stored = _result_rows(service, [a.id, b.id])
    (ra,), (rb,) = stored[a.id], stored[b.id]
    assert (ra.answer, ra.payload_key, ra.model_revision, ra.settings, ra.settings_hash) == (
        "full", "results/x/a/v1.json", "rev-1", {"max_new_tokens": 8}, "abc"
    )  # fmt: skip
    assert (rb.answer, rb.payload_key, rb.model_revision, rb.settings, rb.settings_hash) == (
        "bare", None, None, {}, ""
    )  # fmt: skip
    assert ra.is_current and rb.is_current
