"""The OpenAI Batch API, driven by the real ``openai`` client against the running API and workers.

The taught tiny model answers pages 1 and 2 of taught_pdf() for real, so the responses carry a known
answer (``message.content``) and reasoning (``message.reasoning_content``).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion

from jobs.prompts.presets import DEFAULT
from tests.e2e.test_pipeline import s3_client
from tests.fixtures.models import PAGE_SIDE, taught_pdf
from workers.media.pdf import render_pdf

pytestmark = pytest.mark.slow

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture
def client(running_system: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{running_system}/v1", api_key="test-key", max_retries=0, timeout=60) as c:
        yield c


def _pages() -> list[bytes]:
    return [p.png for p in render_pdf(taught_pdf(), longest_side=PAGE_SIDE, max_pages=10)]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _line(custom_id: str, *parts: dict[str, Any], **body: Any) -> str:
    message = {"role": "user", "content": list(parts)}
    request = {"model": "glm-4.1v", "messages": [message], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": request})


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _upload(client: OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("requests.jsonl", data), purpose="batch").id


def _put_s3(env: dict[str, str], key: str, data: bytes) -> str:
    s3_client(env).put_object(Bucket=env["VLMQ_S3__BUCKET"], Key=key, Body=data)
    return f"s3://{env['VLMQ_S3__BUCKET']}/{key}"


def _wait(client: OpenAI, batch_id: str, timeout: float = 240) -> tuple[Batch, list[str]]:
    """Poll as a user would; returns the final batch and the states seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in TERMINAL:
            return batch, seen
        time.sleep(0.5)
    pytest.fail(f"batch {batch_id} not done after {timeout} s; states seen: {seen}")


def _by_id(client: OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    lines = [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    return {x["custom_id"]: x for x in lines}


# custom_ids as OpenAI takes them: any string (spaces, unicode, slashes, markup); vlmq encodes, never refuses.
TITLE, BILL = "req 1: title page", "facture n°2 / 文档 📄 <b>"


def test_batch_round_trip(client: OpenAI, e2e_env: dict[str, str]) -> None:
    title, bill, _ = _pages()
    bucket = e2e_env["VLMQ_S3__BUCKET"]
    lines = [
        _line(TITLE, _image(_data_uri(title))),
        _line(BILL, _text(DEFAULT.prompt), _image(_put_s3(e2e_env, "openai/bill.png", bill)), max_tokens=64),
        _line("corrupt", _image(_data_uri(b"\x89PNG\r\n\x1a\n but no image follows"))),
        _line("no-image", _text("Describe nothing.")),
        _line("elsewhere", _image("s3://another-bucket/page.png")),
        # One line the policy refuses fails alone, whatever the reason (it failed the whole batch once).
        _line("web", _image("https://example.com/page.png")),
        _line("theirs", _image(f"s3://{bucket}/uploads/tenant-b/{'0' * 64}/page.png")),
    ]
    file_id = _upload(client, lines)
    uploaded = client.files.retrieve(file_id)
    assert (uploaded.purpose, uploaded.filename) == ("batch", "requests.jsonl")
    assert client.files.content(file_id).text.splitlines() == lines

    created = client.batches.create(
        input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata={"run": "e2e"}
    )
    assert created.status == "in_progress" and created.metadata == {"run": "e2e"}
    assert created.request_counts is not None and created.request_counts.total == 7
    batch, seen = _wait(client, created.id)

    assert batch.status == "completed", seen
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 7, "completed": 2, "failed": 5}
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at

    out = _by_id(client, batch.output_file_id)
    assert set(out) == {TITLE, BILL}
    first = ChatCompletion.model_validate(out[TITLE]["response"]["body"])
    message = first.choices[0].message
    assert (message.content, getattr(message, "reasoning_content", None)) == (
        "Quarterly report",
        "A title page.",
    )
    assert first.usage is not None and first.usage.completion_tokens > 0
    assert first.model == "tiny-glm4v-taught" and out[TITLE]["response"]["status_code"] == 200
    second = out[BILL]["response"]["body"]
    assert second["choices"][0]["message"]["content"] == "Total 42"
    assert second["vlmq"]["boxes"] == ["42"] and second["vlmq"]["prompt_version"].startswith("custom-")

    errors = _by_id(client, batch.error_file_id)
    assert set(errors) == {"corrupt", "no-image", "elsewhere", "web", "theirs"}
    codes = {
        k: (v["response"]["status_code"], v["response"]["body"]["error"]["code"]) for k, v in errors.items()
    }
    assert codes == {
        "corrupt": (400, "corrupt_media"),
        "no-image": (400, "unsupported_request"),
        "elsewhere": (400, "forbidden_uri"),
        "web": (400, "forbidden_uri"),
        "theirs": (400, "forbidden_uri"),
    }
    assert "not granted to tenant" in errors["elsewhere"]["response"]["body"]["error"]["message"]
    assert errors["web"]["response"]["body"]["error"]["param"] == "image_url"
    assert client.files.retrieve(batch.output_file_id or "").purpose == "batch_output"


def test_files_list_in_pages_and_delete(client: OpenAI, running_system: str) -> None:
    made = [_upload(client, [_line(f"f{i}", _text("x"))]) for i in range(3)]
    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more  # newest first, in cursor pages
    listed = [f.id for f in client.files.list(limit=2)]  # the client follows the cursor
    assert [f for f in listed if f in made] == made[::-1]
    assert [f.id for f in client.files.list(purpose="batch", order="asc") if f.id in made] == made

    with OpenAI(base_url=f"{running_system}/v1", api_key="other-key", max_retries=0) as other:
        assert not {f.id for f in other.files.list()} & set(made)
        with pytest.raises(openai.NotFoundError):
            other.files.delete(made[0])

    deleted = client.files.delete(made[0])
    assert (deleted.id, deleted.deleted) == (made[0], True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made[0])
    with pytest.raises(openai.NotFoundError):
        client.files.content(made[0])
    with pytest.raises(openai.NotFoundError):
        client.files.delete(made[0])
    assert made[0] not in [f.id for f in client.files.list()]
    assert client.files.retrieve(made[1]).id == made[1]


def test_broken_file_fails_validation(client: OpenAI) -> None:
    good = _line("a", _image("s3://x/y.png"))
    wrong_url = json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/embeddings", "body": {}})
    file_id = _upload(client, [good, '{"custom_id": "b", ', wrong_url, good])
    batch = client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")

    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data is not None
    found = [(e.line, e.code) for e in batch.errors.data]
    assert found == [(2, "invalid_json_line"), (3, "mismatched_endpoint"), (4, "duplicate_custom_id")]
    assert batch.output_file_id is None and batch.request_counts
    assert batch.request_counts.total == 0


def test_list_pages_newest_first_and_tenants_apart(client: OpenAI, running_system: str) -> None:
    file_id = _upload(client, ["not json"])
    made = [
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h").id
        for _ in range(3)
    ]
    page = client.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    listed = [b.id for b in client.batches.list(limit=2)]  # the client follows the cursor
    assert [b for b in listed if b in made] == made[::-1]

    with OpenAI(base_url=f"{running_system}/v1", api_key="other-key", max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(made[0])
        with pytest.raises(openai.NotFoundError):
            other.files.content(file_id)
        assert made[0] not in [b.id for b in other.batches.list()]
    with pytest.raises(openai.UnprocessableEntityError, match="purpose"):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")


def test_cancel_stops_the_batch(client: OpenAI) -> None:
    notes = _pages()[2]  # a page the model was not taught: it writes all 64 tokens, slowly
    lines = [_line(f"n{i}", _image(_data_uri(notes))) for i in range(4)]
    batch = client.batches.create(
        input_file_id=_upload(client, lines), endpoint=ENDPOINT, completion_window="24h"
    )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at

    final, seen = _wait(client, batch.id)
    assert final.status == "cancelled", seen
    out, errors = _by_id(client, final.output_file_id), _by_id(client, final.error_file_id)
    assert set(out) | set(errors) == {f"n{i}" for i in range(4)}
    assert any(e["error"] and e["error"]["code"] == "batch_cancelled" for e in errors.values())
