"""A batch's results are stored in one transaction, and an S3 failure part way through loses nothing:
through the real API, Postgres, S3, prep and inference code with a FakeEngine, the store fails on the
second result payload of a three-page batch. The page written before it is stored; the others are
given back and the next delivery completes the job, every page exactly once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from jobs.config import Settings
from jobs.errors import InvalidInput, StorageUnavailable
from jobs.models import Result
from jobs.service import build_service
from jobs.status import ItemStatus
from jobs.storage import BlobStore, result_key
from tests.fakes import FakeEngine
from tests.integration.prepared import page_units, prepared_pdf
from workers import infer
from workers.context import WorkerContext

A = {"Authorization": "Bearer test-key"}


class FailingResultPut:
    """The session's S3 store, except that the ``nth`` result payload put raises StorageUnavailable
    (as S3BlobStore does when S3 is unreachable), that once. ``result_puts``: every result key a put
    was tried for, in order, the failed one included."""

    def __init__(self, store: BlobStore, nth: int) -> None:
        self.inner = store
        self.bucket = store.bucket
        self.nth = nth
        self.result_puts: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        if key.startswith("results/"):
            self.result_puts.append(key)
            if len(self.result_puts) == self.nth:
                raise StorageUnavailable(f"S3 unreachable: put {key}")
        return self.inner.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        return self.inner.read_uri(uri, max_bytes)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _results(ctx: WorkerContext, job_id: uuid.UUID) -> dict[uuid.UUID, list[Result]]:
    with ctx.service.sessions() as s:
        rows = s.scalars(select(Result).where(Result.job_id == job_id).order_by(Result.version))
        out: dict[uuid.UUID, list[Result]] = {}
        for r in rows:
            out.setdefault(r.item_id, []).append(r)
        return out


def test_s3_failing_on_the_second_payload_keeps_the_first_and_gives_back_the_rest(
    client: TestClient, settings: Settings
) -> None:
    service = build_service(settings)
    store = FailingResultPut(service.store, nth=2)
    ctx = WorkerContext(settings, service, store)
    engine = FakeEngine(lambda r: f"<think>t</think><answer>{r.request_id}</answer>")
    job_id = prepared_pdf(client, ctx, "batch-store", 3)
    units = page_units(ctx, job_id)
    assert [u.status for u in units] == [ItemStatus.READY] * 3
    keys = {result_key(job_id, u.id, 1): u.id for u in units}

    with pytest.raises(StorageUnavailable):
        infer.infer(ctx, engine, [u.id for u in units])  # one batch of three

    assert len(engine.requests) == 3 and len(store.result_puts) == 2  # the third payload was not tried
    written, failed = (keys[k] for k in store.result_puts)
    assert json.loads(store.get(store.result_puts[0]))["answer"] == str(written)
    with pytest.raises(InvalidInput):  # not in S3
        store.get(store.result_puts[1])
    by_id = {u.id: u for u in page_units(ctx, job_id)}
    assert (by_id[written].status, by_id[written].attempts) == (ItemStatus.SUCCEEDED, 1)
    for other in set(by_id) - {written}:
        assert (by_id[other].status, by_id[other].attempts) == (ItemStatus.READY, 1)
        assert by_id[other].error_code == "storage_unavailable"
    stored = _results(ctx, job_id)
    assert set(stored) == {written}
    (row,) = stored[written]
    assert (row.is_current, row.version, row.answer) == (True, 1, str(written))
    assert row.payload_key == store.result_puts[0]
    assert client.get(f"/v1/jobs/{job_id}", headers=A).json()["status"] == "running"

    ready = [u.id for u in by_id.values() if u.status == ItemStatus.READY]
    assert failed in ready
    infer.infer(ctx, engine, ready)  # the next delivery

    assert sorted(str(r.request_id) for r in engine.requests[3:]) == sorted(map(str, ready))
    assert client.get(f"/v1/jobs/{job_id}", headers=A).json()["status"] == "completed"
    stored = _results(ctx, job_id)
    assert set(stored) == set(keys.values())
    for item_id, rows in stored.items():
        (row,) = rows  # exactly once: one row, version 1, current
        assert (row.is_current, row.version, row.answer) == (True, 1, str(item_id))
        assert json.loads(store.get(row.payload_key or ""))["answer"] == str(item_id)
    assert {u.id: u.attempts for u in page_units(ctx, job_id)} == {
        u: 1 if u == written else 2 for u in keys.values()
    }
    lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=A).text.splitlines()]
    assert [(x["page"], x["status"], x["answer"]) for x in lines] == [
        (u.page, "succeeded", str(u.id)) for u in units
    ]
