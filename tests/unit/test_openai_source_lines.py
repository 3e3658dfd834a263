"""An OpenAI batch input file whose one line names a vlmq source (``body.vlmq.source``) in place of an
image (jobs.openai.format, jobs.openai.sources): parsed to the job's request, refused with its other
lines, with an image, or with a typo under ``vlmq``; its request_counts are its job's."""

from __future__ import annotations

import json
from typing import Any

from jobs.openai import format as ob
from jobs.openai import sources
from jobs.schemas import Counts

PREFIX = {"prefix": "s3://corpus/pdfs/**/*.pdf"}


def _line(custom_id: str = "corpus", **body: Any) -> str:
    body = {"messages": [{"role": "user", "content": "Describe the page."}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": ob.ENDPOINT, "body": body})


def _parse(*lines: str) -> ob.ParsedFile:
    return ob.parse_file("\n".join(lines).encode(), max_image_bytes=1 << 20, max_requests=100)


def test_a_source_line_becomes_a_source_job_with_its_prompt_and_limits() -> None:
    parsed = _parse(_line(max_tokens=300, temperature=0.2, vlmq={"source": {**PREFIX, "incremental": False}}))
    req = sources.job_request(parsed)
    assert req is not None and req.source is not None and not req.items
    assert (req.source.prefix, req.source.incremental, req.prompt) == (
        PREFIX["prefix"],
        False,
        "Describe the page.",
    )
    assert (req.options.max_new_tokens, req.options.temperature) == (300, 0.2)


def test_a_file_of_listed_requests_has_no_source_job() -> None:
    image = [{"type": "image_url", "image_url": {"url": "s3://corpus/a.png"}}]
    assert sources.job_request(_parse(_line(messages=[{"role": "user", "content": image}]))) is None


def test_a_source_line_with_other_lines_fails_the_file() -> None:
    image = [{"type": "image_url", "image_url": {"url": "s3://corpus/a.png"}}]
    parsed = _parse(
        _line("one", messages=[{"role": "user", "content": image}]), _line(vlmq={"source": PREFIX})
    )
    [err] = parsed.fatal
    assert (err.code, err.line, err.param) == ("source_not_alone", 2, "body.vlmq.source")
    assert "only line" in err.message
    assert sources.job_request(parsed) is None


def test_a_source_line_with_an_image_or_a_typo_fails_alone() -> None:
    image = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "s3://corpus/a.png"}}]
    with_image = _parse(_line(messages=[{"role": "user", "content": image}], vlmq={"source": PREFIX}))
    [err] = with_image.rejected
    assert err.code == "unsupported_request" and "no image_url part" in err.message
    typo = _parse(_line(vlmq={"sorce": PREFIX}))
    [err] = typo.rejected
    assert err.code == "invalid_request" and "vlmq.sorce" in (err.param or "")
    both = _parse(_line(vlmq={"source": {**PREFIX, "manifest": "s3://corpus/list.jsonl"}}))
    [err] = both.rejected
    assert "exactly one" in err.message


def test_a_source_batchs_request_counts_are_its_jobs() -> None:
    job = Counts(total=1200, completed=1000, failed=150, cancelled=0, expired=50)
    assert ob.request_counts(None, job, rejected=0) == {"total": 1200, "completed": 1000, "failed": 200}
    assert ob.request_counts(None, None, rejected=0) == {"total": 0, "completed": 0, "failed": 0}
