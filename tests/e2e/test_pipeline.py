"""A multi-page PDF and a corrupt file, submitted over HTTP to separately running API and workers:
every page gets a result row (reasoning and answer apart), the corrupt file fails alone, the job
completes, and S3 holds the rendered pages, the result payloads and the output files."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.models import PAGE_SIDE, taught_pdf

pytestmark = pytest.mark.slow

KEY = {"Authorization": "Bearer test-key"}


def wait_done(base: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=KEY, timeout=10).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} not done after {timeout} s: {job}")


def results_by_custom_id(base: str, job_id: str) -> dict[str, list[dict[str, Any]]]:
    """A job's result lines, grouped by the item they belong to."""
    text = httpx.get(f"{base}/v1/jobs/{job_id}/results", headers=KEY, timeout=30).text
    by_item: dict[str, list[dict[str, Any]]] = {}
    for line in map(json.loads, text.splitlines()):
        by_item.setdefault(line["custom_id"], []).append(line)
    return by_item


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["VLMQ_S3__ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def s3_keys(env: dict[str, str], prefix: str) -> list[str]:
    listing = s3_client(env).list_objects_v2(Bucket=env["VLMQ_S3__BUCKET"], Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_pdf_job_end_to_end(running_system: str, e2e_env: dict[str, str]) -> None:
    files = [
        ("file", ("report.pdf", taught_pdf(), "application/pdf")),
        ("file", ("broken.pdf", b"%PDF-1.7\n1 0 obj <<", "application/pdf")),
    ]
    r = httpx.post(f"{running_system}/v1/jobs", files=files, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    job = wait_done(running_system, r.json()["id"])

    assert job["status"] == "completed"
    assert job["request_counts"] == {"total": 2, "completed": 1, "failed": 1, "cancelled": 0, "expired": 0}
    assert job["page_counts"] == {"total": 3, "completed": 3, "failed": 0, "cancelled": 0, "expired": 0}

    lines = [
        json.loads(x)
        for x in httpx.get(
            f"{running_system}/v1/jobs/{job['id']}/results", headers=KEY, timeout=30
        ).text.splitlines()
    ]
    pages = [x for x in lines if x["custom_id"] == "report.pdf"]
    assert [p["page"] for p in pages] == [1, 2, 3]
    assert all(p["status"] == "succeeded" and p["usage"]["completion_tokens"] > 0 for p in pages)
    assert all(p["model_id"] == "tiny-glm4v-taught" and p["prompt_version"] == "caption-v1" for p in pages)
    # Pages 1 and 2 are the ones the tiny model was taught: real structured output, split apart.
    assert (pages[0]["reasoning"], pages[0]["answer"]) == ("A title page.", "Quarterly report")
    assert (pages[1]["reasoning"], pages[1]["answer"], pages[1]["boxes"]) == ("A bill.", "Total 42", ["42"])
    assert pages[0]["finish_reason"] == "stop" and pages[0]["flags"] == []
    broken = [x for x in lines if x["custom_id"] == "broken.pdf"]
    assert len(broken) == 1 and broken[0]["status"] == "failed"
    assert broken[0]["error"]["code"] == "corrupt_media"

    _check_rows(e2e_env["VLMQ_DB__URL"], job["id"])
    _check_objects(e2e_env, job["id"])


def test_inference_worker_says_when_its_engine_is_ready(running_system: str, e2e_env: dict[str, str]) -> None:
    """The worker writes its engine's load time once the engine is up (healthchecks, dashboards)."""
    ready = json.loads(Path(e2e_env["VLMQ_MODEL__READY_FILE"]).read_text())
    assert ready["engine"] == "transformers" and ready["model_id"] == "tiny-glm4v-taught"
    assert 0 < ready["load_seconds"] < 300 and ready["ready_at"] <= time.time()


def _check_rows(db_url: str, job_id: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                text(
                    "SELECT r.reasoning, r.answer, r.raw_text, r.truncated, r.answer_missing, u.page "
                    "FROM results r JOIN items u ON u.id = r.item_id WHERE r.job_id = :j ORDER BY u.page"
                ),
                {"j": uuid.UUID(job_id)},
            ).all()
            events = c.scalar(text("SELECT count(*) FROM events WHERE job_id = :j"), {"j": uuid.UUID(job_id)})
    finally:
        engine.dispose()
    assert [r.page for r in rows] == [1, 2, 3]
    # Reasoning and answer are stored in separate columns, the raw text beside them.
    assert (rows[0].reasoning, rows[0].answer) == ("A title page.", "Quarterly report")
    assert rows[1].raw_text.startswith("<think>A bill.</think><answer>Total <|begin_of_box|>42")
    for r in rows:
        assert r.raw_text
        assert r.truncated == ("</think>" not in r.raw_text)
    assert events >= 10  # submitted, running, per-item transitions, completed


def _check_objects(env: dict[str, str], job_id: str) -> None:
    media = s3_keys(env, "media/")
    assert len([k for k in media if k.endswith(f"/{PAGE_SIDE}px/page-00003.png")]) >= 1
    assert len(s3_keys(env, f"results/{job_id}/")) == 3
    outputs = s3_keys(env, f"jobs/{job_id}/")
    dataset = [
        f"jobs/{job_id}/dataset/{n}" for n in ("manifest.json", "part-00000.jsonl.gz", "part-00000.parquet")
    ]
    assert outputs == [*dataset, f"jobs/{job_id}/errors.jsonl", f"jobs/{job_id}/output.jsonl"]
