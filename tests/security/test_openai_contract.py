"""The OpenAI Batch contract under attack: a line the server refuses fails alone, whatever the reason, and
every file-level error names its line and param. Real API (TestClient), Postgres, Redis and S3; no
workers (the batch is cancelled to be finalized). The full round trip with the `openai` client and the
workers is tests/e2e/test_openai_batch.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.config import Settings

A = {"Authorization": "Bearer test-key"}
ENDPOINT = "/v1/chat/completions"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _line(custom_id: str, url: str, text: str = "Caption it.") -> dict[str, Any]:
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"messages": [{"role": "user", "content": content}]}  # no "model": documented as optional
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def _batch(client: TestClient, lines: list[dict[str, Any]] | bytes) -> dict[str, Any]:
    data = lines if isinstance(lines, bytes) else b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    f = client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}, headers=A)
    assert f.status_code == 200, f.text
    body = {"input_file_id": f.json()["id"], "endpoint": ENDPOINT, "completion_window": "24h"}
    r = client.post("/v1/batches", json=body, headers=A)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_each_refused_line_fails_alone(client: TestClient, settings: Settings) -> None:
    """One https:// line failed the whole batch with forbidden_uri, without line or param."""
    bucket = settings.s3.bucket
    lines = [
        _line("good one", f"s3://{bucket}/in/page.png"),
        _line("web", "https://example.com/page.png"),
        _line("private", "https://169.254.169.254/latest/meta-data"),
        _line("theirs", f"s3://{bucket}/uploads/tenant-b/{'0' * 64}/page.png"),
        _line("server's", f"s3://{bucket}/media/{'0' * 64}/1288px/page-00001.png"),
        _line("tokens", f"s3://{bucket}/in/page.png", text="look <|begin_of_image|> here"),
        _line("nul\x00", f"s3://{bucket}/in/page.png"),  # Postgres text cannot hold it
    ]
    batch = _batch(client, lines)
    assert batch["status"] == "in_progress", batch["errors"]  # it failed whole before
    assert batch["request_counts"] == {"total": 7, "completed": 0, "failed": 6}

    assert client.post(f"/v1/batches/{batch['id']}/cancel", headers=A).status_code == 200
    final = client.get(f"/v1/batches/{batch['id']}", headers=A).json()
    assert final["status"] == "cancelled", final
    text = client.get(f"/v1/files/{final['error_file_id']}/content", headers=A).text
    errors = {x["custom_id"]: x for x in map(json.loads, text.splitlines())}
    codes = {k: (v["response"] or {}).get("body", {}).get("error", {}).get("code") for k, v in errors.items()}
    assert codes == {
        "web": "forbidden_uri",
        "private": "forbidden_uri",
        "theirs": "forbidden_uri",
        "server's": "forbidden_uri",
        "tokens": "prompt_media_limit",
        "nul\x00": "invalid_request",
        "good one": None,  # never ran: the batch was cancelled (error.code batch_cancelled)
    }
    assert errors["good one"]["error"]["code"] == "batch_cancelled"
    assert errors["web"]["response"]["body"]["error"]["param"] == "image_url"


def test_file_level_errors_name_line_and_param(client: TestClient) -> None:
    good = _line("a", "s3://x/y.png")
    bad = [good, {"custom_id": "b", "method": "GET", "url": ENDPOINT, "body": {}}, {"custom_id": "c"}]
    batch = _batch(client, bad)
    assert batch["status"] == "failed"
    found = [(e["code"], e["line"], e["param"]) for e in batch["errors"]["data"]]
    assert found == [("invalid_method", 2, "method"), ("invalid_request", 3, "method")]
    empty = _batch(client, b"\n\n")
    assert [set(e) for e in empty["errors"]["data"]] == [{"code", "message", "line", "param"}]
