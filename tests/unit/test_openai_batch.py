"""OpenAI Batch translation: what fails the file, what fails one line, and the response lines."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from jobs.openai import format as ob
from jobs.schemas import Counts, ErrorInfo, ResultLine, Usage
from jobs.status import Outcome

PNG = base64.b64encode(b"\x89PNG fake").decode()


def line(custom_id: str = "a", content: Any = None, url: str = ob.ENDPOINT, **body: Any) -> str:
    content = (
        content if content is not None else [{"type": "image_url", "image_url": {"url": "s3://b/k.png"}}]
    )
    request = {"model": "m", "messages": [{"role": "user", "content": content}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": request})


def parse(*lines: str, max_image_bytes: int = 1000) -> ob.ParsedFile:
    return ob.parse_file("\n".join(lines).encode(), max_image_bytes=max_image_bytes, max_requests=10)


def test_a_good_line_becomes_a_request() -> None:
    content = [
        {"type": "text", "text": "Read the table."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    parsed = parse(line("x", content, max_tokens=50, temperature=0.2))
    assert not parsed.fatal and not parsed.rejected
    (r,) = parsed.requests
    assert (r.custom_id, r.prompt, r.image_data, r.image_type) == (
        "x",
        "Read the table.",
        b"\x89PNG fake",
        "image/png",
    )
    assert (r.max_tokens, r.temperature, r.image_uri) == (50, 0.2, None)


@pytest.mark.parametrize(
    ("lines", "code", "at"),
    [
        (["{not json"], "invalid_json_line", 1),
        ([line("a"), line("a")], "duplicate_custom_id", 2),
        ([line(url="/v1/embeddings")], "mismatched_endpoint", 1),
        ([json.dumps({"custom_id": "a", "method": "POST", "url": ob.ENDPOINT})], "invalid_request", 1),
        ([], "empty_file", None),
        ([line(str(i)) for i in range(11)], "too_many_requests", None),
    ],
)
def test_a_broken_file_fails_the_batch(lines: list[str], code: str, at: int | None) -> None:
    parsed = parse(*lines)
    assert [(e.code, e.line) for e in parsed.fatal][:1] == [(code, at)]


@pytest.mark.parametrize(
    ("content", "body", "code"),
    [
        ([{"type": "text", "text": "no image"}], {}, "unsupported_request"),
        ([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}], {}, "invalid_image_url"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}], {}, "invalid_image_url"),
        (
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 2000}}],
            {},
            "image_too_large",
        ),
        ([{"type": "input_audio", "input_audio": {}}], {}, "unsupported_request"),
        (None, {"n": 2}, "invalid_request"),
        (None, {"stream": True}, "invalid_request"),
    ],
)
def test_a_bad_request_fails_alone(content: Any, body: dict[str, Any], code: str) -> None:
    parsed = parse(line("bad", content, **body), line("good"))
    assert not parsed.fatal
    assert [r.custom_id for r in parsed.requests] == ["good"]
    assert [(e.code, e.custom_id, e.line) for e in parsed.rejected] == [(code, "bad", 1)]


def _page(page: int, **kw: Any) -> ResultLine:
    base = {"custom_id": "doc", "page": page, "status": "succeeded", "model_id": "glm", "prompt_version": "v"}
    return ResultLine.model_validate({**base, **kw})


def _files(results: list[ResultLine], not_run: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(output-file lines, error-file lines), as jobs.openai.batches writes them from request_lines."""
    ok: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for good, line in ob.request_lines("batch_1", results, 123, not_run):
        (ok if good else bad).append(line)
    return ok, bad


def test_output_lines_join_pages_and_map_errors() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    results = [
        _page(1, answer="A", reasoning="r1", usage=usage, finish_reason="stop"),
        _page(2, answer="B", reasoning="r2", usage=usage, finish_reason="length", boxes=["7"]),
        ResultLine(
            custom_id="bad", page=None, status="failed", error=ErrorInfo(code="corrupt_media", message="m")
        ),
        ResultLine(
            custom_id="slow", page=1, status="failed", error=ErrorInfo(code="engine_error", message="e")
        ),
        ResultLine(custom_id="late", page=None, status="cancelled"),
    ]
    ok, bad = _files(results, "batch_cancelled")
    (doc,) = ok
    body = doc["response"]["body"]
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "A\n\nB",
        "reasoning_content": "r1\n\nr2",
    }
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["total_tokens"] == 30
    assert body["vlmq"]["boxes"] == ["7"] and doc["id"] == f"batch_req_{ob.request_id('batch_1', 'doc')}"
    by_id = {x["custom_id"]: x for x in bad}
    assert by_id["bad"]["response"]["status_code"] == 400
    assert by_id["slow"]["response"]["status_code"] == 500
    assert by_id["slow"]["response"]["body"]["error"]["type"] == "server_error"
    assert by_id["late"]["response"] is None and by_id["late"]["error"]["code"] == "batch_cancelled"


def test_request_counts_put_every_request_that_did_not_run_under_failed() -> None:
    job = Counts(total=6, completed=2, failed=1, cancelled=2, expired=1)
    assert ob.request_counts(8, job, rejected=2) == {"total": 8, "completed": 2, "failed": 6}
    assert ob.request_counts(3, None, rejected=3) == {"total": 3, "completed": 0, "failed": 3}


def test_lines_an_expired_batch_never_ran_say_so() -> None:
    expired = ErrorInfo(code="expired", message="m")
    results = [ResultLine(custom_id="late", page=1, status=Outcome.EXPIRED, error=expired)]
    _, (late,) = _files(results, "batch_expired")
    assert late["response"] is None and late["error"]["code"] == "batch_expired"
