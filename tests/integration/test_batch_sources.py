"""An OpenAI batch whose input file names a vlmq source (``body.vlmq.source``, jobs.openai.sources)
through the real API, Postgres and the S3 test server: a prefix listed as the job runs, played to the
end by the workers' steps, its output and error files read back; its request_counts are its job's at
every step; a source the tenant may not read is refused with 422 and leaves no batch; a glob over a
granted bucket still lists only what the tenant could name."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sql
from fastapi.testclient import TestClient

from jobs.config import Settings
from jobs.errors import CorruptMedia
from jobs.models import Batch, Item, Job
from jobs.service import JobService
from tests.integration import service_of
from tests.integration.reprocess_fixtures import result

A = {"Authorization": "Bearer test-key"}


def _source_file(client: TestClient, source: dict[str, Any], *extra: dict[str, Any]) -> str:
    body = {"max_tokens": 256, "messages": [{"role": "user", "content": "Describe it."}]}
    line = {"custom_id": "corpus", "method": "POST", "url": "/v1/chat/completions"}
    lines = [{**line, "body": {**body, "vlmq": {"source": source}}}, *extra]
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    f = client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}, headers=A)
    assert f.status_code == 200, f.text
    return str(f.json()["id"])


def _create(client: TestClient, file_id: str) -> Any:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return client.post("/v1/batches", json=body, headers=A)


def _job_of(service: JobService, batch_id: str) -> uuid.UUID:
    with service.sessions() as s:
        job_id = s.scalar(sql.select(Batch.job_id).where(Batch.id == batch_id))
    assert job_id is not None
    return job_id


def _sources(service: JobService, job_id: uuid.UUID) -> dict[str, Item]:
    with service.sessions() as s:
        rows = s.scalars(sql.select(Item).where(Item.job_id == job_id, Item.parent_id.is_(None)))
        return {i.custom_id: i for i in rows}


def _run(service: JobService, job_id: uuid.UUID, fail: set[str]) -> None:
    """Each listed source prepared as one page and answered, or failed when its custom_id is in ``fail``."""
    for cid, src in _sources(service, job_id).items():
        assert service.begin_prep(src.id) is not None
        if cid in fail:
            service.fail_items([src.id], CorruptMedia("not a PDF"))
            continue
        (batch,) = service.finish_prep(src.id, [(1, f"media/o/{src.id}.png")])
        (unit,) = service.claim_units(batch)
        assert service.complete_units([(unit, result(answer=f"about {cid}"))])


def _counts(client: TestClient, batch_id: str, job_id: uuid.UUID) -> tuple[dict[str, int], dict[str, int]]:
    batch = client.get(f"/v1/batches/{batch_id}", headers=A).json()
    job = client.get(f"/v1/jobs/{job_id}", headers=A).json()["request_counts"]
    return batch["request_counts"], job


def test_a_prefix_source_batch_runs_to_completion_and_answers_each_object(
    client: TestClient, settings: Settings
) -> None:
    service, bucket, root = service_of(client), settings.s3.bucket, f"batch-src-{uuid.uuid4().hex[:8]}"
    keys = [f"{root}/pdfs/{d}/doc-{i}.pdf" for d in ("a", "b/c") for i in range(2)]
    for key in [*keys, f"{root}/pdfs/a/notes.txt"]:
        service.store.put(key, b"%PDF-1.4 x")
    created = _create(client, _source_file(client, {"prefix": f"s3://{bucket}/{root}/pdfs/**/*.pdf"}))
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == 0  # not listed yet
    job_id = _job_of(service, batch["id"])
    service.list_next(job_id)  # the listing task's one page
    assert set(_sources(service, job_id)) == set(keys)  # a request per object, its key its custom_id
    counts, job = _counts(client, batch["id"], job_id)
    assert counts == {"total": 4, "completed": 0, "failed": 0} and job["total"] == 4

    failed = keys[0]
    _run(service, job_id, fail={failed})
    assert service.finalize(job_id)
    final = client.get(f"/v1/batches/{batch['id']}", headers=A).json()
    counts, job = _counts(client, batch["id"], job_id)
    assert final["status"] == "completed" and counts == {"total": 4, "completed": 3, "failed": 1}
    assert (job["completed"], job["failed"] + job["cancelled"] + job["expired"]) == (3, 1)  # one story

    out = client.get(f"/v1/files/{final['output_file_id']}/content", headers=A).text.splitlines()
    answers = {
        x["custom_id"]: x["response"]["body"]["choices"][0]["message"]["content"]
        for x in map(json.loads, out)
    }
    assert answers == {k: f"about {k}" for k in keys if k != failed}
    errors = [
        json.loads(x)
        for x in client.get(f"/v1/files/{final['error_file_id']}/content", headers=A).text.splitlines()
    ]
    assert [(e["custom_id"], e["response"]["body"]["error"]["code"]) for e in errors] == [
        (failed, "corrupt_media")
    ]
    with service.sessions() as s:  # the line's prompt and max_tokens are the job's
        job_row = s.get(Job, job_id)
        assert job_row is not None and "Describe it." in job_row.prompt
        assert job_row.options == {"max_new_tokens": 256}
    assert service.get("tenant-a", job_id).listing is not None


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ({"prefix": "s3://{bucket}/uploads/tenant-b/**/*.pdf"}, "server's own storage"),  # another tenant's
        ({"prefix": "s3://{bucket}/results/**"}, "server's own storage"),
        ({"prefix": "s3://not-granted-{uid}/x/*.pdf"}, "not granted"),
        ({"manifest": "s3://not-granted-{uid}/list.jsonl"}, "not granted"),
        ({"prefix": "s3://{bucket}/in/../uploads/tenant-b/"}, ".."),
        ({"manifest": "s3://{bucket}/batch-src-{uid}/missing.jsonl"}, "does not exist"),
    ],
)
def test_a_source_batch_the_tenant_may_not_read_is_refused_with_422_and_no_batch(
    client: TestClient, settings: Settings, source: dict[str, str], needle: str
) -> None:
    uid = uuid.uuid4().hex[:8]
    source = {k: v.format(bucket=settings.s3.bucket, uid=uid) for k, v in source.items()}
    before = len(client.get("/v1/batches?limit=100", headers=A).json()["data"])
    r = _create(client, _source_file(client, source))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("forbidden_uri", "invalid_input")
    message = r.json()["error"]["message"]
    assert needle in message and next(iter(source.values())).split("/")[2] in message  # names the bucket
    assert len(client.get("/v1/batches?limit=100", headers=A).json()["data"]) == before


def test_a_source_line_among_other_lines_fails_the_batch_as_a_broken_file(
    client: TestClient, settings: Settings
) -> None:
    image = [{"type": "image_url", "image_url": {"url": f"s3://{settings.s3.bucket}/in/a.png"}}]
    other = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions"}
    other["body"] = {"messages": [{"role": "user", "content": image}]}
    r = _create(client, _source_file(client, {"prefix": f"s3://{settings.s3.bucket}/in/"}, other))
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert r.json()["errors"]["data"][0]["code"] == "source_not_alone"


def test_a_source_batchs_glob_lists_only_what_the_tenant_could_name(
    client: TestClient, settings: Settings
) -> None:
    """The test tenants are granted the whole bucket: each listed key is checked again, as for a job."""
    service, bucket, uid = service_of(client), settings.s3.bucket, uuid.uuid4().hex[:8]
    theirs, mine = f"uploads/tenant-b/{uid}-theirs.pdf", f"uploads/tenant-a/{uid}-mine.pdf"
    for key in (theirs, mine, f"results/{uid}-r.pdf", f"jobs/{uid}-o.pdf", f"in/{uid}-input.pdf"):
        service.store.put(key, b"%PDF-1.4 x")
    batch = _create(client, _source_file(client, {"prefix": f"s3://{bucket}/**/{uid}-*.pdf"})).json()
    job_id = _job_of(service, batch["id"])
    for _ in range(200):  # the whole bucket, a page (1,000 keys) at a time
        if service.get("tenant-a", job_id).listing.status != "listing":  # type: ignore[union-attr]
            break
        service.list_next(job_id)
    assert set(_sources(service, job_id)) == {mine, f"in/{uid}-input.pdf"}
