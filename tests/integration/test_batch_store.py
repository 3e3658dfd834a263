"""A batch's results are stored in one transaction, and an S3 failure part way through loses nothing:
through the real API, Postgres, S3, prep and inference code with a FakeEngine, the store fails on the
second result payload of a three-page batch. Every payload is tried (one at a time, or several at once:
``s3.put_concurrency``); the pages whose payloads were written are stored, the failed one is given back
and the next delivery completes the job, every page exactly once."""

from __future__ import annotations

import json
import threading
import uuid
from typing import IO

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from jobs.adapters.storage import BlobStore, result_key
from jobs.config import Settings
from jobs.errors import InvalidInput, StorageUnavailable
from jobs.models import Result
from jobs.service import build_service
from jobs.status import ItemStatus
from tests.fakes import FakeEngine
from tests.integration.prepared import page_units, prepared_pdf
from workers import infer
from workers.context import WorkerContext

A = {"Authorization": "Bearer test-key"}


class FailingResultPut:
    """The session's S3 store, except that the ``nth`` result payload put raises StorageUnavailable
    (as S3BlobStore does when S3 is unreachable), that once. ``result_puts``: every result key a put
    was tried for, the failed one (``failed``) included."""

    def __init__(self, store: BlobStore, nth: int) -> None:
        self.inner = store
        self.bucket = store.bucket
        self.nth = nth
        self.result_puts: list[str] = []
        self.failed: str | None = None
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        if key.startswith("results/"):
            with self._lock:  # the payloads of a batch are put from several threads
                self.result_puts.append(key)
                if len(self.result_puts) == self.nth:
                    self.failed = key
                    raise StorageUnavailable(f"S3 unreachable: put {key}")
        return self.inner.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def read_uri(self, uri: str, max_bytes: int) -> bytes:
        return self.inner.read_uri(uri, max_bytes)

    def put_file(self, key: str, f: IO[bytes], content_type: str = "application/octet-stream") -> str:
        return self.inner.put_file(key, f, content_type)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def _results(ctx: WorkerContext, job_id: uuid.UUID) -> dict[uuid.UUID, list[Result]]:
    with ctx.service.sessions() as s:
        rows = s.scalars(select(Result).where(Result.job_id == job_id).order_by(Result.version))
        out: dict[uuid.UUID, list[Result]] = {}
        for r in rows:
            out.setdefault(r.item_id, []).append(r)
        return out


@pytest.mark.parametrize("concurrency", [1, 8])
def test_s3_failing_on_the_second_payload_keeps_the_others_and_gives_back_that_one(
    client: TestClient, settings: Settings, concurrency: int
) -> None:
    settings = settings.model_copy(
        update={"s3": settings.s3.model_copy(update={"put_concurrency": concurrency})}
    )
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

    assert len(engine.requests) == 3 and sorted(store.result_puts) == sorted(keys)  # every payload tried
    assert store.failed is not None
    failed = keys[store.failed]
    written = set(keys.values()) - {failed}
    with pytest.raises(InvalidInput):  # not in S3
        store.get(store.failed)
    by_id = {u.id: u for u in page_units(ctx, job_id)}
    for w in written:
        assert (by_id[w].status, by_id[w].attempts) == (ItemStatus.SUCCEEDED, 1)
        assert json.loads(store.get(result_key(job_id, w, 1)))["answer"] == str(w)
    assert (by_id[failed].status, by_id[failed].attempts) == (ItemStatus.READY, 1)
    assert by_id[failed].error_code == "storage_unavailable"
    stored = _results(ctx, job_id)
    assert set(stored) == written
    for w in written:
        (row,) = stored[w]
        assert (row.is_current, row.version, row.answer) == (True, 1, str(w))
        assert row.payload_key == result_key(job_id, w, 1)
    assert client.get(f"/v1/jobs/{job_id}", headers=A).json()["status"] == "running"

    ready = [u.id for u in by_id.values() if u.status == ItemStatus.READY]
    assert ready == [failed]
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
        u: 2 if u == failed else 1 for u in keys.values()
    }
    lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=A).text.splitlines()]
    assert [(x["page"], x["status"], x["answer"]) for x in lines] == [
        (u.page, "succeeded", str(u.id)) for u in units
    ]
