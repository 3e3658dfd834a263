"""Every view of a job tells one story of its items' outcomes (jobs.status.Outcome: succeeded, failed,
cancelled, expired): GET /v1/jobs/{id}, ``?status=`` lines, output.jsonl and errors.jsonl, the results
page, `vlmq watch`'s bars and the OpenAI batch's request_counts. Real API (TestClient), Postgres, Redis
and S3; the workers' steps are played through the service, so each item ends where the test puts it."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from html import unescape
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from rich.console import Console
from sqlalchemy import select, text

from api.cli.progress import JobProgress
from jobs.config import Settings
from jobs.errors import CorruptMedia, Expired
from jobs.models import Batch, Item
from jobs.service import JobService
from jobs.sweeper import sweep
from jobs.views import browse
from tests.integration import service_of
from tests.integration.reprocess_fixtures import result

A = {"Authorization": "Bearer test-key"}
CANCELLED = {"code": "cancelled", "message": "the job was cancelled before this item finished"}
# The story _play tells: d0 one page done, one failed (the file failed); d1 one page done, one waiting
# when the job is cancelled; d2 waiting; d3 unreadable (failed before any page); d4 done.
REQUESTS = {"total": 5, "completed": 1, "failed": 2, "cancelled": 2, "expired": 0}
PAGES = {"total": 5, "completed": 3, "failed": 1, "cancelled": 1, "expired": 0}
LINES = {
    ("d0", 1): "succeeded",
    ("d0", 2): "failed",
    ("d1", 1): "succeeded",
    ("d1", 2): "cancelled",
    ("d2", None): "cancelled",
    ("d3", None): "failed",
    ("d4", 1): "succeeded",
}


def _sources(service: JobService, job_id: uuid.UUID) -> list[Item]:
    with service.sessions() as s:
        q = select(Item).where(Item.job_id == job_id, Item.parent_id.is_(None)).order_by(Item.custom_id)
        return list(s.scalars(q))


def _play(service: JobService, job_id: uuid.UUID) -> None:
    """Bring the five sources d0-d4 to the story above, short of the cancel."""
    d0, d1, _d2, d3, d4 = _sources(service, job_id)
    for src in (d0, d1, d3, d4):
        assert service.begin_prep(src.id) is not None
    (b0,) = service.finish_prep(d0.id, [(1, "media/o/d0-1.png"), (2, "media/o/d0-2.png")])
    u01, u02 = service.claim_units(b0)
    assert service.complete_units([(u01, result())])
    service.fail_items([u02.id], CorruptMedia("page 2 cannot be read"))
    (b1,) = service.finish_prep(d1.id, [(1, "media/o/d1-1.png"), (2, "media/o/d1-2.png")])
    (u11,) = service.claim_units(b1[:1])
    assert service.complete_units([(u11, result())])  # its page 2 stays ready: the cancel catches it
    service.fail_items([d3.id], CorruptMedia("not a PDF"))
    (b4,) = service.finish_prep(d4.id, [(1, "media/o/d4-1.png")])
    (u41,) = service.claim_units(b4)
    assert service.complete_units([(u41, result())])


def _submit(client: TestClient, settings: Settings) -> uuid.UUID:
    bucket = settings.s3.bucket
    items = [{"custom_id": f"d{i}", "uri": f"s3://{bucket}/in/{i}.pdf"} for i in range(5)]
    r = client.post("/v1/jobs", json={"items": items}, headers=A)
    assert r.status_code == 202, r.text
    return uuid.UUID(r.json()["id"])


def _lines(client: TestClient, job_id: uuid.UUID, status: str | None = None) -> list[dict[str, Any]]:
    query = f"?status={status}" if status else ""
    r = client.get(f"/v1/jobs/{job_id}/results{query}", headers=A)
    assert r.status_code == 200, r.text
    return [json.loads(x) for x in r.text.splitlines()]


def _jsonl(service: JobService, key: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in service.store.get(key).decode().splitlines()]


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("vlmq_item_failures_total", {"reason": reason}) or 0.0


def _text(html: str) -> str:
    """What a reader sees of some HTML: tags out, whitespace collapsed, entities decoded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_after_a_cancel_every_view_counts_the_same_outcomes(client: TestClient, settings: Settings) -> None:
    service = service_of(client)
    job_id = _submit(client, settings)
    _play(service, job_id)
    job = client.post(f"/v1/jobs/{job_id}/cancel", headers=A).json()
    assert job["status"] == "cancelled"  # nothing was in flight
    assert (job["request_counts"], job["page_counts"]) == (REQUESTS, PAGES)
    assert client.get(f"/v1/jobs/{job_id}", headers=A).json() == job

    lines = _lines(client, job_id)
    assert {(x["custom_id"], x["page"]): x["status"] for x in lines} == LINES
    for status in ("succeeded", "failed", "cancelled", "expired"):
        wanted = sorted(k for k, v in LINES.items() if v == status)
        assert sorted((x["custom_id"], x["page"]) for x in _lines(client, job_id, status)) == wanted
    for x in _lines(client, job_id, "cancelled"):
        assert (x["error"], x["answer"]) == (CANCELLED, None)
    assert all(x["error"]["code"] == "corrupt_media" for x in _lines(client, job_id, "failed"))

    errors = _jsonl(service, f"jobs/{job_id}/errors.jsonl")
    assert Counter(x["status"] for x in errors) == {"failed": 2, "cancelled": 2}
    assert all(x["error"] for x in errors)  # every line without an answer says why
    assert [x["custom_id"] for x in _jsonl(service, f"jobs/{job_id}/output.jsonl")] == ["d0", "d1", "d4"]


def test_the_results_page_and_watch_show_the_api_counts(client: TestClient, settings: Settings) -> None:
    service = service_of(client)
    job_id = _submit(client, settings)
    _play(service, job_id)
    job = client.post(f"/v1/jobs/{job_id}/cancel", headers=A).json()

    client.post("/ui/login", data={"api_key": "test-key"})
    tr = re.search(rf'<tr data-job="{job_id}">(.*?)</tr>', client.get("/ui").text, re.S)
    assert tr is not None and "5/5 1 failed 1 cancelled 100%" in _text(tr.group(1))
    summary = _text(client.get(f"/ui/jobs/{job_id}").text)
    assert "documents 5/5 2 failed 2 cancelled · pages 5/5 1 failed 1 cancelled" in summary, summary
    (row,) = [r for r in browse.jobs(service, "tenant-a", 500, 0) if r.id == job_id]
    assert row.pages.model_dump() == PAGES  # the query /ui lists jobs with

    console = Console(record=True, width=150, force_terminal=False)
    with JobProgress(console, str(job_id)) as bars:
        bars.update(job)
    out = console.export_text()
    docs = next(line for line in out.splitlines() if "documents" in line)
    pages = next(line for line in out.splitlines() if "pages" in line)
    assert re.search(r"5/5 +2 failed, 2 cancelled ", docs), docs
    assert re.search(r"5/5 +1 failed, 1 cancelled ", pages), pages


def test_the_openai_batch_maps_the_outcomes_onto_its_request_counts(
    client: TestClient, settings: Settings
) -> None:
    service = service_of(client)
    url = f"s3://{settings.s3.bucket}/in/page.png"
    content = [{"type": "image_url", "image_url": {"url": url}}]
    body = {"messages": [{"role": "user", "content": content}]}
    data = b"".join(
        json.dumps(
            {"custom_id": f"d{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        ).encode()
        + b"\n"
        for i in range(5)
    )
    f = client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}, headers=A)
    created = {
        "input_file_id": f.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch = client.post("/v1/batches", json=created, headers=A).json()
    with service.sessions() as s:
        job_id = s.scalar(select(Batch.job_id).where(Batch.id == batch["id"]))
    assert job_id is not None
    _play(service, job_id)
    assert client.post(f"/v1/batches/{batch['id']}/cancel", headers=A).status_code == 200
    final = client.get(f"/v1/batches/{batch['id']}", headers=A).json()
    job = client.get(f"/v1/jobs/{job_id}", headers=A).json()
    assert (final["status"], job["request_counts"]) == ("cancelled", REQUESTS)
    # OpenAI has no cancelled or expired count: a request that did not run counts as failed.
    assert final["request_counts"] == {"total": 5, "completed": 1, "failed": 4}
    errors = client.get(f"/v1/files/{final['error_file_id']}/content", headers=A).text.splitlines()
    codes = {
        x["custom_id"]: (x["error"] or x["response"]["body"]["error"])["code"]
        for x in map(json.loads, errors)
    }
    assert codes == {
        "d0": "corrupt_media",
        "d1": "batch_cancelled",
        "d2": "batch_cancelled",
        "d3": "corrupt_media",
    }


def test_an_expired_job_counts_its_unfinished_items_as_expired(
    client: TestClient, settings: Settings
) -> None:
    """d1's waiting page expires: d1 is expired, not failed (none of its pages failed); d2 expires
    waiting. The failed and succeeded ones keep their outcome."""
    service = service_of(client)
    job_id = _submit(client, settings)
    _play(service, job_id)
    with service.sessions() as s, s.begin():
        s.execute(
            text("UPDATE jobs SET expires_at = now() - interval '1 second' WHERE id = :j"), {"j": job_id}
        )
        waiting = s.scalar(select(Item.id).where(Item.job_id == job_id, Item.status == "ready"))
    before = _failures("expired")
    assert waiting is not None  # d1's page 2, stopped by a worker that finds its job expired:
    service.fail_items([waiting], Expired("the job expired before this item finished"))
    assert _failures("expired") == before  # not a failure in the workers' metrics either
    assert sweep(service).expired_jobs >= 1
    job = client.get(f"/v1/jobs/{job_id}", headers=A).json()
    assert job["status"] == "expired"
    assert job["request_counts"] == {**REQUESTS, "cancelled": 0, "expired": 2}
    assert job["page_counts"] == {**PAGES, "cancelled": 0, "expired": 1}
    expired = _lines(client, job_id, "expired")
    assert sorted((x["custom_id"], x["page"]) for x in expired) == [("d1", 2), ("d2", None)]
    assert {x["error"]["code"] for x in expired} == {"expired"}
    assert len(_lines(client, job_id)) == len(LINES)  # d1's own expiry is its page's: no line of its own
    errors = _jsonl(service, f"jobs/{job_id}/errors.jsonl")
    assert Counter(x["status"] for x in errors) == {"failed": 2, "expired": 2}
