"""The API surface beside /v1/jobs on real Postgres, Redis and S3: /metrics, the OpenAI routes' refusals,
and the results page's sign-in (the flows with workers are in tests/e2e)."""

from __future__ import annotations

import uuid

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from jobs.adapters.storage import S3BlobStore
from jobs.config import Settings
from tests.conftest import METRICS_TOKEN
from tests.integration import with_limits

A = {"Authorization": "Bearer test-key"}


def _submit(client: TestClient, settings: Settings) -> str:
    key = f"inputs/{uuid.uuid4().hex}.pdf"
    S3BlobStore(settings).put(key, b"%PDF-1.7 never rendered here", "application/pdf")
    body = {"items": [{"custom_id": "d", "uri": f"s3://{settings.s3.bucket}/{key}"}]}
    r = client.post("/v1/jobs", json=body, headers=A)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _samples(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    return {
        (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_read_queue_depth_and_states(client: TestClient, settings: Settings) -> None:
    _submit(client, settings)
    r = redis.Redis.from_url(settings.redis.url or "")
    try:
        depth = int(r.llen(f"{settings.redis.key_prefix}prep"))
    finally:
        r.close()
    samples = _samples(client)
    assert depth >= 1 and samples[("vlmq_queue_depth", "queue=prep")] == depth
    assert samples[("vlmq_items", "status=queued")] >= 1  # no worker runs here: it stays queued
    assert samples[("vlmq_jobs", "status=queued")] >= 1
    assert samples[("vlmq_metrics_source_up", "source=postgres")] == 1


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (
            {"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            404,
            "",
        ),
        (
            {"input_file_id": "file-x", "endpoint": "/v1/embeddings", "completion_window": "24h"},
            422,
            "endpoint",
        ),
        (
            {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "1h"},
            422,
            "24h",
        ),
    ],
)
def test_batch_create_refusals(client: TestClient, body: dict[str, str], status: int, needle: str) -> None:
    r = client.post("/v1/batches", json=body, headers=A)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_file_upload_limit_and_cancel_of_a_failed_batch(settings: Settings) -> None:
    small = with_limits(settings, max_upload_bytes=400)
    with TestClient(create_app(small)) as c:
        big = c.post(
            "/v1/files", files={"file": ("a.jsonl", b"x" * 1000)}, data={"purpose": "batch"}, headers=A
        )
        assert big.status_code == 413
        f = c.post("/v1/files", files={"file": ("a.jsonl", b"nope\n")}, data={"purpose": "batch"}, headers=A)
        assert f.status_code == 200 and f.json()["bytes"] == 5
        body = {
            "input_file_id": f.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch = c.post("/v1/batches", json=body, headers=A).json()
        assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "invalid_json_line"
        cancel = c.post(f"/v1/batches/{batch['id']}/cancel", headers=A)
        assert cancel.status_code == 409


def test_results_page_needs_a_key_and_keeps_tenants_apart(client: TestClient, settings: Settings) -> None:
    job_id = _submit(client, settings)
    first = client.get("/ui", follow_redirects=False)
    assert (first.status_code, first.headers["location"]) == (303, "/ui/login")
    assert client.post("/ui/login", data={"api_key": "nope"}).status_code == 401

    signed = client.post("/ui/login", data={"api_key": "test-key"}, follow_redirects=False)
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert job_id in client.get("/ui").text
    assert client.get(f"/ui/jobs/{job_id}").status_code == 200

    client.cookies.set("vlmq_key", "other-key")
    assert job_id not in client.get("/ui").text
    assert client.get(f"/ui/jobs/{job_id}").status_code == 404
