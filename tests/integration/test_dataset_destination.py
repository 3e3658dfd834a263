"""A job's dataset written to a destination of the tenant's own (``"dataset": {"prefix": ...}``,
jobs.views.exports) through the real API, Postgres and the S3 test server: the shards land there and read
back with pyarrow, the same rows as the job's own copy; a rewrite lands on the same objects and deletes
only shards; a prefix the tenant may not write to is refused at submission; a grant taken back before the
job ends, or a bucket that fails while written, leaves the job its own copy and says why."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sql
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.adapters.storage import S3BlobStore
from jobs.config import Settings
from jobs.errors import CorruptMedia
from jobs.models import Item
from jobs.service import JobService, build_service
from tests.conftest import RUN_ID
from tests.integration import with_section
from tests.integration.reprocess_fixtures import result

A = {"Authorization": "Bearer test-key"}
DEST = f"vlmq-dest-{RUN_ID}"  # the tenants' own output bucket
READ_ONLY = f"vlmq-read-only-{RUN_ID}"  # granted for reading only


def _grants(settings: Settings, writes: bool = True) -> Settings:
    bucket = settings.s3.bucket
    reads = {**settings.inputs.grants, "tenant-a": [f"s3://{READ_ONLY}/"]}
    write_grants = {
        "tenant-a": [f"s3://{DEST}/tenant-a/"],
        "tenant-b": [f"s3://{DEST}/shared/tenant-b/"],
        "*": [f"s3://{DEST}/shared/", f"s3://{bucket}/"],  # the server's whole bucket: its prefixes stay shut
    }
    return with_section(settings, "inputs", grants=reads, write_grants=write_grants if writes else {})


@pytest.fixture
def granted(settings: Settings) -> Settings:
    client = S3BlobStore(settings).client
    if DEST not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=DEST)
    return _grants(settings)


@pytest.fixture
def api(granted: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(granted)) as c:
        yield c


def _submit(c: TestClient, settings: Settings, prefix: str) -> Any:
    bucket = settings.s3.bucket
    items = [{"custom_id": f"d{i}", "uri": f"s3://{bucket}/in/{uuid.uuid4().hex}.pdf"} for i in range(3)]
    return c.post("/v1/jobs", json={"items": items, "dataset": {"prefix": prefix}}, headers=A)


def _play(service: JobService, job_id: uuid.UUID) -> None:
    """d1 fails; d0 and d2 are answered, a page each."""
    with service.sessions() as s:
        items = s.scalars(sql.select(Item).where(Item.job_id == job_id).order_by(Item.custom_id)).all()
    for it in items:
        assert service.begin_prep(it.id) is not None
        if it.custom_id == "d1":
            service.fail_items([it.id], CorruptMedia("truncated"))
            continue
        (batch,) = service.finish_prep(it.id, [(1, f"media/o/{it.id}.png")])
        (unit,) = service.claim_units(batch)
        assert service.complete_units([(unit, result(answer=f"about {it.custom_id}"))])


def _objects(service: JobService, prefix: str) -> dict[str, str]:
    """{key under ``prefix``: ETag} at the destination."""
    listed = service.store.client.list_objects_v2(Bucket=DEST, Prefix=prefix)  # type: ignore[attr-defined]
    return {o["Key"][len(prefix) :]: o["ETag"] for o in listed.get("Contents", [])}


def _get(service: JobService, key: str) -> bytes:
    body = service.store.client.get_object(Bucket=DEST, Key=key)["Body"]  # type: ignore[attr-defined]
    return bytes(body.read())


def _events(c: TestClient, job_id: str) -> list[tuple[str, str | None]]:
    data = c.get(f"/v1/jobs/{job_id}/events", headers=A).json()["data"]
    return [(e["kind"], e["detail"]) for e in data if e["kind"].startswith("dataset.")]


def test_the_dataset_lands_at_the_destination_and_reads_back_with_pyarrow(
    api: TestClient, granted: Settings
) -> None:
    service: JobService = api.app.state.service  # type: ignore[attr-defined]
    run = f"tenant-a/run-{uuid.uuid4().hex[:8]}/"
    # What an earlier dataset there left, and a file of the tenant's that a manifest happens to name.
    old = {"shards": [{"parquet": "part-00004.parquet", "jsonl_gz": "notes.txt"}]}
    for name, data in (
        ("manifest.json", json.dumps(old).encode()),
        ("part-00004.parquet", b"x"),
        ("notes.txt", b"mine"),
    ):
        service.store.client.put_object(Bucket=DEST, Key=run + name, Body=data)  # type: ignore[attr-defined]
    r = _submit(api, granted, f"s3://{DEST}/{run}")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["dataset"] == {"prefix": f"s3://{DEST}/{run}", "written_at": None, "error": None}
    _play(service, uuid.UUID(job_id))
    assert service.finalize(uuid.UUID(job_id))

    job = api.get(f"/v1/jobs/{job_id}", headers=A).json()
    assert job["status"] == "completed" and job["dataset"]["written_at"] and job["dataset"]["error"] is None
    written = _objects(service, run)
    assert set(written) == {"manifest.json", "part-00000.parquet", "part-00000.jsonl.gz", "notes.txt"}
    manifest = json.loads(_get(service, run + "manifest.json"))
    assert (manifest["rows"], manifest["shards"][0]["parquet"]) == (3, "part-00000.parquet")
    rows = pq.read_table(io.BytesIO(_get(service, run + "part-00000.parquet"))).to_pylist()
    own = api.get(f"/v1/jobs/{job_id}/dataset/part-00000.parquet", headers=A)
    assert rows == pq.read_table(io.BytesIO(own.content)).to_pylist()  # the job's own copy, the same rows
    assert sorted((r["custom_id"], r["status"], r["answer"]) for r in rows) == [
        ("d0", "succeeded", "about d0"), ("d1", "failed", None), ("d2", "succeeded", "about d2"),
    ]  # fmt: skip
    assert _events(api, job_id) == [("dataset.written", f"s3://{DEST}/{run}")]

    with service.sessions() as s, s.begin():  # finalize again (a reopened job ends again): same objects
        service.write_outputs(s, uuid.UUID(job_id))
    assert _objects(service, run) == written


@pytest.mark.parametrize(
    ("prefix", "needle"),
    [
        ("s3://{dest}/shared/tenant-b/run-1/", "not granted for writing"),  # tenant-b's area, under "*"
        ("s3://{dest}/tenant-b/run-1/", "not granted for writing"),
        ("s3://nowhere-{uid}/out/", "not granted for writing"),  # an ungranted bucket
        ("s3://{read_only}/out/", "not granted for writing"),  # readable is not writable
        ("s3://{dest}/tenant-a/../shared/tenant-b/", "'..'"),
        ("s3://{dest}/tenant-a/run/*/", "plain prefix"),
        ("s3://{bucket}/uploads/tenant-b/out/", "server's own storage"),  # another tenant's uploads
        ("s3://{bucket}/uploads/tenant-a/out/", "server's own storage"),
        ("s3://{bucket}/jobs/", "server's own storage"),
        ("s3://{bucket}/results/x/", "server's own storage"),
        ("s3://{bucket}/files", "server's own storage"),
        ("https://example.com/out/", "s3://bucket/prefix/"),
    ],
)
def test_a_destination_the_tenant_may_not_write_to_is_refused_at_submission(
    api: TestClient, granted: Settings, prefix: str, needle: str
) -> None:
    uri = prefix.format(dest=DEST, uid=uuid.uuid4().hex[:8], read_only=READ_ONLY, bucket=granted.s3.bucket)
    r = _submit(api, granted, uri)
    assert r.status_code == 422, (uri, r.text)
    error = r.json()["error"]
    assert error["code"] == "forbidden_uri" and needle in error["message"] and uri in error["message"], error


def test_a_write_grant_taken_back_before_the_job_ends_leaves_its_own_copy_and_says_why(
    api: TestClient, granted: Settings
) -> None:
    run = f"tenant-a/run-{uuid.uuid4().hex[:8]}/"
    job_id = _submit(api, granted, f"s3://{DEST}/{run}").json()["id"]
    revoked = build_service(_grants(granted, writes=False))  # the operator took the grant back
    _play(revoked, uuid.UUID(job_id))
    assert revoked.finalize(uuid.UUID(job_id))

    job = api.get(f"/v1/jobs/{job_id}", headers=A).json()
    assert job["status"] == "completed" and job["dataset"]["written_at"] is None
    assert (
        job["dataset"]["error"].startswith("forbidden_uri: ")
        and "not granted for writing" in job["dataset"]["error"]
    )
    assert _objects(revoked, run) == {}  # nothing written there
    assert api.get(f"/v1/jobs/{job_id}/dataset", headers=A).json()["rows"] == 3  # the job's own copy
    [(kind, detail)] = _events(api, job_id)
    assert kind == "dataset.failed" and "not granted for writing" in (detail or "")


def test_a_destination_that_fails_while_written_leaves_the_job_its_own_copy(
    api: TestClient, granted: Settings
) -> None:
    """A granted bucket that does not exist (yet): the job ends with its own copy and the reason; once the
    bucket is there, the next write (a reopened job's end) lands and clears the error."""
    missing = f"vlmq-dest-late-{uuid.uuid4().hex[:8]}"
    late = with_section(granted, "inputs", write_grants={"tenant-a": [f"s3://{missing}/"]})
    with TestClient(create_app(late)) as c:
        service: JobService = c.app.state.service  # type: ignore[attr-defined]
        job_id = _submit(c, late, f"s3://{missing}/run/").json()["id"]
        _play(service, uuid.UUID(job_id))
        assert service.finalize(uuid.UUID(job_id))
        job = c.get(f"/v1/jobs/{job_id}", headers=A).json()
        assert (
            job["status"] == "completed" and f"bucket '{missing}' does not exist" in job["dataset"]["error"]
        )
        assert c.get(f"/v1/jobs/{job_id}/dataset", headers=A).json()["rows"] == 3
        assert c.get(f"/v1/jobs/{job_id}/results", headers=A).text.count("\n") == 3

        service.store.client.create_bucket(Bucket=missing)  # type: ignore[attr-defined]
        with service.sessions() as s, s.begin():
            service.write_outputs(s, uuid.UUID(job_id))
        job = c.get(f"/v1/jobs/{job_id}", headers=A).json()
        assert job["dataset"]["error"] is None and job["dataset"]["written_at"]
        assert [k for k, _ in _events(c, job_id)] == ["dataset.failed", "dataset.written"]


def test_a_granted_prefix_of_the_servers_own_bucket_outside_its_prefixes_is_written(
    api: TestClient, granted: Settings
) -> None:
    service: JobService = api.app.state.service  # type: ignore[attr-defined]
    run = f"exports/run-{uuid.uuid4().hex[:8]}"  # no trailing "/": a prefix is a folder
    r = _submit(api, granted, f"s3://{granted.s3.bucket}/{run}")
    assert r.status_code == 202, r.text
    _play(service, uuid.UUID(r.json()["id"]))
    assert service.finalize(uuid.UUID(r.json()["id"]))
    assert json.loads(service.store.get(f"{run}/manifest.json"))["rows"] == 3


def test_an_upload_names_its_destination_in_a_form_field_checked_as_the_json_bodys(
    api: TestClient, granted: Settings
) -> None:
    """`vlmq submit --dataset-to` on files: the multipart upload's ``dataset`` field."""
    pdf = ("file", ("a.pdf", b"%PDF-1.4 not really", "application/pdf"))
    mine = f"s3://{DEST}/tenant-a/up-{uuid.uuid4().hex[:8]}/"
    r = api.post("/v1/jobs", files=[pdf], data={"dataset": mine}, headers=A)
    assert r.status_code == 202, r.text
    assert r.json()["dataset"] == {"prefix": mine, "written_at": None, "error": None}
    theirs = f"s3://{DEST}/shared/tenant-b/x/"
    r = api.post("/v1/jobs", files=[pdf], data={"dataset": theirs}, headers=A)
    assert r.status_code == 422 and r.json()["error"]["code"] == "forbidden_uri", r.text
