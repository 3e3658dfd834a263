"""Result writer processes (workers.writers) against the real services: a batch's results stored by a
spawned writer exactly as by the task thread; an error there comes back as itself and gives the units
back; a writer killed before the batch fails it with ``writer_lost``, and the next batch gets new
writers. Through the real API, prep and inference code, with an engine that answers at once."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from jobs.config import Settings
from jobs.errors import StorageUnavailable, WriterLost
from jobs.models import Item, Job, Result
from jobs.service import build_service
from jobs.status import ItemStatus
from tests.fakes import FakeEngine
from tests.integration.prepared import page_units, prepared_pdf
from workers import infer
from workers.context import WorkerContext
from workers.lanes import JobLane
from workers.writers import Writers


@pytest.fixture
def writers() -> Iterator[Writers]:
    w = Writers(1)
    yield w
    w.shutdown()


def _job(settings: Settings, pages: int, name: str) -> tuple[WorkerContext, uuid.UUID, list[Item]]:
    service = build_service(settings)
    ctx = WorkerContext(settings, service, service.store)
    with TestClient(create_app(settings)) as client:
        job_id = prepared_pdf(client, ctx, name, pages)
    return ctx, job_id, page_units(ctx, job_id)


def _engine() -> FakeEngine:
    return FakeEngine(lambda r: f"<think>page {r.request_id}</think><answer>{r.request_id}</answer>")


def test_a_writer_stores_the_batch_and_settles_the_job(settings: Settings, writers: Writers) -> None:
    ctx, job_id, units = _job(settings, 3, "writer-ok")
    (pid,) = writers.start()
    assert pid != os.getpid()
    infer.run(ctx, _engine(), JobLane(ctx.service), [u.id for u in units], writers)
    assert [u.status for u in page_units(ctx, job_id)] == [ItemStatus.SUCCEEDED] * 3
    with ctx.service.sessions() as s:
        rows = list(s.scalars(select(Result).where(Result.job_id == job_id)))
        job = s.get(Job, job_id)
    assert sorted(r.answer or "" for r in rows) == sorted(str(u.id) for u in units)
    for r in rows:  # the payload the writer put, and the page's pixel size for the boxes
        payload = json.loads(ctx.store.get(r.payload_key or ""))
        assert (payload["answer"], payload["engine"], payload["version"]) == (r.answer, "fake", 1)
    assert job is not None and job.status == "completed"


def test_an_error_in_the_writer_comes_back_as_itself_and_gives_the_units_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, writers: Writers
) -> None:
    ctx, job_id, units = _job(settings, 2, "writer-s3-down")
    # The writer reads its settings from the environment when it starts: an S3 endpoint that refuses.
    monkeypatch.setenv("VLMQ_S3__ENDPOINT_URL", "http://127.0.0.1:9")
    writers.start()
    with pytest.raises(StorageUnavailable):
        infer.run(ctx, _engine(), JobLane(ctx.service), [u.id for u in units], writers)
    after = page_units(ctx, job_id)
    assert [(u.status, u.error_code) for u in after] == [(ItemStatus.READY, "storage_unavailable")] * 2


def test_a_killed_writer_fails_the_batch_as_writer_lost_and_the_next_gets_a_new_one(
    settings: Settings, writers: Writers
) -> None:
    ctx, job_id, units = _job(settings, 2, "writer-killed")
    (pid,) = writers.start()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the pool's manager thread notices
    with pytest.raises(WriterLost):
        infer.run(ctx, _engine(), JobLane(ctx.service), [u.id for u in units], writers)
    assert [(u.status, u.error_code) for u in page_units(ctx, job_id)] == [
        (ItemStatus.READY, "writer_lost")
    ] * 2
    infer.run(ctx, _engine(), JobLane(ctx.service), [u.id for u in units], writers)  # redelivered
    assert [u.status for u in page_units(ctx, job_id)] == [ItemStatus.SUCCEEDED] * 2
    (new_pid,) = writers.start()
    assert new_pid != pid
