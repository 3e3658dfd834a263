"""The REST API on real Postgres, Redis (messages really enqueued) and the moto S3 server."""

from __future__ import annotations

import uuid

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.adapters.storage import S3BlobStore
from jobs.config import Settings
from tests.integration import with_limits

A = {"Authorization": "Bearer test-key"}
B = {"X-API-Key": "other-key"}


@pytest.fixture
def pdf_uri(settings: Settings) -> str:
    store = S3BlobStore(settings)
    key = f"inputs/{uuid.uuid4().hex}.pdf"
    store.put(key, b"%PDF-1.7 not rendered in this test", "application/pdf")
    return f"s3://{settings.s3.bucket}/{key}"


def _queue_len(settings: Settings, queue: str) -> int:
    r = redis.Redis.from_url(settings.redis.url or "")
    try:
        return int(r.llen(f"{settings.redis.key_prefix}{queue}"))
    finally:
        r.close()


def _body(uri: str, **extra: object) -> dict[str, object]:
    return {"items": [{"custom_id": "doc-1", "uri": uri}], **extra}


def test_healthz_reports_every_service(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"postgres": "ok", "redis": "ok", "s3": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}])
def test_api_key_required(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get(f"/v1/jobs/{uuid.uuid4()}", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


def test_submit_json_stores_job_and_enqueues_prep(
    client: TestClient, settings: Settings, pdf_uri: str
) -> None:
    before = _queue_len(settings, "prep")
    r = client.post("/v1/jobs", json=_body(pdf_uri, options={"max_new_tokens": 16}), headers=A)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["request_counts"] == {"total": 1, "completed": 0, "failed": 0, "cancelled": 0, "expired": 0}
    assert job["prompt_version"] == "caption-v1"
    assert _queue_len(settings, "prep") == before + 1
    got = client.get(f"/v1/jobs/{job['id']}", headers=A)
    assert got.status_code == 200 and got.json()["id"] == job["id"]


def test_idempotency_key_returns_same_job(client: TestClient, pdf_uri: str) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex, **A}
    first = client.post("/v1/jobs", json=_body(pdf_uri), headers=key)
    again = client.post("/v1/jobs", json=_body(pdf_uri), headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    changed = client.post("/v1/jobs", json=_body(pdf_uri, prompt="other"), headers=key)
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "conflict"


def test_tenant_sees_only_its_own_jobs(client: TestClient, pdf_uri: str) -> None:
    job = client.post("/v1/jobs", json=_body(pdf_uri), headers=A).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=B).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/results", headers=B).status_code == 404


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        ([{"custom_id": "a", "uri": "file:///etc/passwd"}], "forbidden_uri"),
        ([{"custom_id": "a", "uri": "s3://elsewhere/x.pdf"}], "not granted to tenant"),
        ([], "a job has items or a source"),
        ([{"custom_id": "a", "uri": "s3://b/x.pdf"}, {"custom_id": "a", "uri": "s3://b/y.pdf"}], "unique"),
        ([{"custom_id": "nul\x00", "uri": "s3://b/x.pdf"}], "NUL"),
    ],
)
def test_bad_submissions_get_specific_errors(
    client: TestClient, settings: Settings, items: list[dict[str, str]], needle: str
) -> None:
    for it in items:  # the allowed bucket is this session's; keep "elsewhere" and file:// as they are
        it["uri"] = it["uri"].replace("s3://b/", f"s3://{settings.s3.bucket}/")
    r = client.post("/v1/jobs", json={"items": items}, headers=A)
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_unknown_option_is_rejected(client: TestClient, pdf_uri: str) -> None:
    r = client.post("/v1/jobs", json=_body(pdf_uri, options={"max_new_tokens": 0}), headers=A)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"][-1] == "max_new_tokens"


def test_multipart_upload_stores_files_first(client: TestClient, settings: Settings) -> None:
    files = [
        ("file", ("scan one.pdf", b"%PDF-1.7 a", "application/pdf")),
        ("file", ("scan one.pdf", b"%PDF-1.7 b", "application/pdf")),
    ]
    r = client.post("/v1/jobs", files=files, data={"prompt": "Read it."}, headers=A)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    lines = client.get(f"/v1/jobs/{job_id}/results", headers=A).text.splitlines()
    assert [line for line in lines if '"custom_id":"scan one.pdf"' in line]  # the file's own name
    assert [line for line in lines if '"custom_id":"scan one.pdf-2"' in line]


def test_upload_over_limit_is_413(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(with_limits(settings, max_upload_bytes=100))) as c:
        r = c.post(
            "/v1/jobs", files=[("file", ("big.pdf", b"%PDF" + b"x" * 500, "application/pdf"))], headers=A
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "source_too_large"


def test_an_uploads_files_are_stored_several_at_once_and_each_item_points_at_its_own(
    client: TestClient, settings: Settings
) -> None:
    """Stored ``VLMQ_S3__PUT_CONCURRENCY`` at once (8 here, 20 files): the items keep the upload's
    order, and each one's object holds that file's bytes."""
    from sqlalchemy import select

    from jobs.adapters.db import session_factory
    from jobs.models import Item

    datas = [b"%PDF-1.7 file " + bytes(str(i), "ascii") * (i + 1) for i in range(20)]
    files = [("file", (f"d{i}.pdf", d, "application/pdf")) for i, d in enumerate(datas)]
    r = client.post("/v1/jobs", files=files, headers=A)
    assert r.status_code == 202, r.text
    with session_factory(settings)() as s:
        items = s.scalars(select(Item).where(Item.job_id == uuid.UUID(r.json()["id"]))).all()
    store, prefix = S3BlobStore(settings), f"s3://{settings.s3.bucket}/"
    by_name = {i.custom_id: i.uri for i in items}
    assert sorted(by_name) == sorted(f"d{i}.pdf" for i in range(20))
    for i, data in enumerate(datas):
        uri = by_name[f"d{i}.pdf"]
        assert uri is not None and uri.startswith(prefix)
        assert store.get(uri.removeprefix(prefix)) == data


def test_one_file_over_the_limit_among_many_refuses_the_upload_naming_it(settings: Settings) -> None:
    from sqlalchemy import func, select

    from jobs.adapters.db import session_factory
    from jobs.models import Item

    tag = uuid.uuid4().hex[:8]
    files = [("file", (f"{tag}-{i}.pdf", b"%PDF-1.7 small", "application/pdf")) for i in range(12)]
    files.insert(7, ("file", ("big.pdf", b"%PDF" + b"x" * 500, "application/pdf")))
    with TestClient(create_app(with_limits(settings, max_upload_bytes=100))) as c:
        r = c.post("/v1/jobs", files=files, headers=A)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "source_too_large" and "big.pdf" in r.json()["error"]["message"]
    with session_factory(settings)() as s:  # no job was made of the others
        assert s.scalar(select(func.count()).where(Item.custom_id.like(f"{tag}-%"))) == 0


def test_unknown_job_is_404(client: TestClient) -> None:
    r = client.get(f"/v1/jobs/{uuid.uuid4()}/results", headers=A)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
