"""OpenAI Batch <-> vlmq: request lines in, response lines out. Pure functions, no I/O.

A request line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`` whose
body's ``messages`` hold text parts and exactly one ``image_url`` part (a data URI, an s3:// or an https
URI). Each line becomes one vlmq item; its answer comes back as ``message.content`` and its reasoning as
``message.reasoning_content``. A line whose body names a source (``body.vlmq.source``, jobs.openai.sources)
has no image: it must be the file's only line, and each object listed from it is a request.

Two kinds of bad input, as OpenAI has them:
- a broken *file* (not JSONL, a line that is not a request object, a wrong method or url, a repeated
  custom_id) fails the whole batch during validation: :class:`LineError` entries in ``batch.errors``;
- a well-formed line whose *request* cannot run (no image, a bad data URI, an unsupported parameter)
  fails alone: it goes to the error file as a 400 response, and the other lines go on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs import errors
from jobs.schemas import Counts, ResultLine, SourceIn

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
MAX_FATAL_ERRORS = 100  # a file broken everywhere reports this many lines, not all of them
_TEXT_ROLES = {"system", "developer", "user"}


@dataclass(frozen=True)
class LineError:
    """A rejected line: an OpenAI ``BatchError`` (file-level) or an error-file entry (request-level)."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None
    custom_id: str | None = None

    def batch_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True)
class ParsedRequest:
    line: int
    custom_id: str
    image_uri: str | None  # s3:// or https:// as given; None when the image came inline
    image_data: bytes | None  # the decoded bytes of a data URI
    image_type: str | None  # a data URI's media type, e.g. image/png
    prompt: str | None  # the text parts, joined; None: the server's default prompt
    max_tokens: int | None = None
    temperature: float | None = None
    source: SourceIn | None = None  # body.vlmq.source: the requests are what it lists (no image)


@dataclass
class ParsedFile:
    requests: list[ParsedRequest] = field(default_factory=list)
    rejected: list[LineError] = field(default_factory=list)  # request-level: to the error file
    fatal: list[LineError] = field(default_factory=list)  # file-level: the batch fails


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    custom_id: str = Field(min_length=1, max_length=255)
    method: str
    url: str
    body: dict[str, Any]


class _Vlmq(BaseModel):
    """vlmq's own part of a request body (``body.vlmq``; other servers ignore it), as the output's
    ``body.vlmq`` is: a source listed in place of the image (the object POST /v1/jobs takes)."""

    model_config = ConfigDict(extra="forbid")  # a typo ("sorce") must not run the line as an image request

    source: SourceIn | None = None


class _Body(BaseModel):
    """The chat completion parameters vlmq honours; others a batch may carry are ignored."""

    model_config = ConfigDict(extra="ignore")

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    stream: Literal[False] = False  # a batch line cannot stream
    vlmq: _Vlmq | None = None


class RequestRejected(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


def parse_file(data: bytes, *, max_image_bytes: int, max_requests: int) -> ParsedFile:
    """Validate an input file; see the module docstring for what fails the batch and what one line."""
    out = ParsedFile()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        out.fatal.append(LineError("invalid_file", "the input file is not UTF-8 text (JSONL expected)"))
        return out
    seen: set[str] = set()
    lines = [(n, raw) for n, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    if not lines:
        out.fatal.append(LineError("empty_file", "the input file has no request lines"))
    elif len(lines) > max_requests:
        out.fatal.append(LineError("too_many_requests", f"at most {max_requests} requests per batch"))
    for n, raw in lines if not out.fatal else []:
        env = _envelope(n, raw, seen, out.fatal)
        if env is None or out.fatal:
            continue
        try:
            out.requests.append(_request(n, env, max_image_bytes))
        except RequestRejected as e:
            out.rejected.append(LineError(e.code, str(e), n, e.param, env.custom_id))
    _source_alone(out, len(lines))
    del out.fatal[MAX_FATAL_ERRORS:]
    return out


def _source_alone(out: ParsedFile, lines: int) -> None:
    """A batch is one job, of listed requests or of one source: a source line shares the file with none."""
    r = next((r for r in out.requests if r.source is not None), None)
    if r is not None and lines > 1:
        msg = (
            f"line {r.line} names a source (body.vlmq.source), so it must be the file's only line: "
            f"a batch runs as one job, of listed requests or of one source; this file has {lines} lines"
        )
        out.fatal.append(LineError("source_not_alone", msg, r.line, "body.vlmq.source"))


def _envelope(n: int, raw: str, seen: set[str], fatal: list[LineError]) -> _Envelope | None:
    try:
        env = _Envelope.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"].startswith("json"):
            fatal.append(LineError("invalid_json_line", f"line {n} is not valid JSON: {first['msg']}", n))
        else:
            param = ".".join(map(str, first["loc"])) or None
            fatal.append(LineError("invalid_request", f"line {n}: {param}: {first['msg']}", n, param))
        return None
    if env.method.upper() != "POST":
        fatal.append(LineError("invalid_method", f"line {n}: method must be POST", n, "method"))
    elif env.url != ENDPOINT:
        msg = f"line {n}: url {env.url!r} does not match the batch's endpoint {ENDPOINT}"
        fatal.append(LineError("mismatched_endpoint", msg, n, "url"))
    elif env.custom_id in seen:
        msg = f"line {n}: custom_id {env.custom_id!r} is repeated; custom_id must be unique in a batch"
        fatal.append(LineError("duplicate_custom_id", msg, n, "custom_id"))
    seen.add(env.custom_id)
    return env


def _request(n: int, env: _Envelope, max_image_bytes: int) -> ParsedRequest:
    try:
        body = _Body.model_validate(env.body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(map(str, first["loc"]))
        raise RequestRejected("invalid_request", f"body.{param}: {first['msg']}", f"body.{param}") from e
    texts, images = _content(body.messages)
    source = body.vlmq.source if body.vlmq else None
    if len(images) != (0 if source else 1):
        needs = "no image_url part (its source names the media)" if source else "exactly one image_url part"
        raise RequestRejected(
            "unsupported_request", f"a request needs {needs}; this one has {len(images)}", "body.messages"
        )
    uri, data, mime = _image(images[0], max_image_bytes) if images else (None, None, None)
    return ParsedRequest(
        line=n,
        custom_id=env.custom_id,
        image_uri=uri,
        image_data=data,
        image_type=mime,
        prompt="\n\n".join(texts) or None,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        source=source,
    )


def _content(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(text parts, image URLs) of the messages, in order. Multi-turn chats are not a batch job."""
    texts: list[str] = []
    images: list[str] = []
    for m in messages:
        if m.get("role") not in _TEXT_ROLES:
            raise RequestRejected(
                "unsupported_request", f"message role {m.get('role')!r} is not supported", "body.messages"
            )
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise RequestRejected("invalid_request", "message content must be a string or a list of parts")
        for part in parts:
            _part(part, texts, images)
    return [t for t in texts if t.strip()], images


def _part(part: Any, texts: list[str], images: list[str]) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        texts.append(part["text"])
    elif kind == "image_url" and isinstance(part.get("image_url"), dict | str):
        url = part["image_url"]
        images.append(url.get("url", "") if isinstance(url, dict) else url)
    else:
        raise RequestRejected(
            "unsupported_request", f"content part {kind!r} is not supported (text and image_url are)"
        )


def _image(url: str, max_bytes: int) -> tuple[str | None, bytes | None, str | None]:
    if url.startswith(("s3://", "https://")):
        return url, None, None
    if not url.startswith("data:"):
        raise RequestRejected(
            "invalid_image_url", "image_url must be a data URI, an s3:// or an https:// URI", "image_url"
        )
    header, sep, payload = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise RequestRejected(
            "invalid_image_url", "a data URI must be data:<type>;base64,<data>", "image_url"
        )
    if len(payload) * 3 // 4 > max_bytes:
        raise RequestRejected("image_too_large", f"the image is over {max_bytes} bytes", "image_url")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestRejected(
            "invalid_image_url", f"the data URI is not valid base64: {e}", "image_url"
        ) from e
    return None, data, mime or "application/octet-stream"


# -- output -------------------------------------------------------------------------------------------


def request_id(batch_id: str, custom_id: str) -> str:
    """Stable per (batch, line): a rewritten output file has the same ids."""
    return hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).hexdigest()[:24]


def _retryable(code: str) -> bool:
    classes = {c.code: c for c in _subclasses(errors.VlmqError)}
    cls = classes.get(code)
    return cls is not None and issubclass(cls, errors.RetryableError)


def _subclasses(cls: type[errors.VlmqError]) -> Iterable[type[errors.VlmqError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def response_line(batch_id: str, custom_id: str, pages: list[ResultLine], created: int) -> dict[str, Any]:
    """An output-file line for a request whose pages all succeeded (a multi-page PDF: joined)."""
    rid = request_id(batch_id, custom_id)
    prompt = sum(p.usage.prompt_tokens for p in pages if p.usage)
    completion = sum(p.usage.completion_tokens for p in pages if p.usage)
    message = {
        "role": "assistant",
        "content": "\n\n".join(p.answer or "" for p in pages),
        "reasoning_content": "\n\n".join(p.reasoning or "" for p in pages),
    }
    finish = "length" if any(p.finish_reason == "length" for p in pages) else "stop"
    body = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": pages[0].model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        # vlmq's own facts; OpenAI clients ignore fields they do not know.
        "vlmq": {
            "boxes": [b for p in pages for b in p.boxes],
            "flags": sorted({f for p in pages for f in p.flags}),
            "truncated": any(p.truncated for p in pages),
            "answer_missing": any(p.answer_missing for p in pages),
            "prompt_version": pages[0].prompt_version,
            "pages": len(pages),
        },
    }
    return {
        "id": f"batch_req_{rid}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": rid, "body": body},
        "error": None,
    }


def error_line(
    batch_id: str, custom_id: str, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    """An error-file line for a request that ran, or was refused, and failed: a 400 or a 500 response."""
    rid = request_id(batch_id, custom_id)
    server = _retryable(code)
    err = {
        "message": message,
        "type": "server_error" if server else "invalid_request_error",
        "param": param,
        "code": code,
    }
    return {
        "id": f"batch_req_{rid}",
        "custom_id": custom_id,
        "response": {"status_code": 500 if server else 400, "request_id": rid, "body": {"error": err}},
        "error": None,
    }


def not_run_line(batch_id: str, custom_id: str, code: str) -> dict[str, Any]:
    """An error-file line for a request that never ran: the batch was cancelled or expired first."""
    why = "the batch was cancelled" if code == "batch_cancelled" else "the completion window expired"
    return {
        "id": f"batch_req_{request_id(batch_id, custom_id)}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": f"This request was not executed: {why}."},
    }


def request_lines(
    batch_id: str, results: Iterable[ResultLine], created: int, not_run_code: str
) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(for the output file?, line) per request, in the results' order, one request's pages held at a
    time: a job's result lines come with each request's pages together (a source's custom_id is unique
    in its job, and jobs.repository orders lines by source), so a batch of 10^6 requests streams."""
    for custom_id, pages in itertools.groupby(results, key=lambda r: r.custom_id):
        yield request_line(batch_id, custom_id, list(pages), created, not_run_code)


def request_line(
    batch_id: str, custom_id: str, pages: list[ResultLine], created: int, not_run_code: str
) -> tuple[bool, dict[str, Any]]:
    """A request's line from its pages': a response if all succeeded, else an error line (a failed
    page's error, or never run: the batch was cancelled or expired first)."""
    failed = next((p for p in pages if p.status == "failed"), None)
    if failed is not None:
        err = failed.error
        code, message = (err.code, err.message) if err else ("server_error", "the request failed")
        return False, error_line(batch_id, custom_id, code, message)
    if all(p.status == "succeeded" for p in pages):
        return True, response_line(batch_id, custom_id, pages, created)
    return False, not_run_line(batch_id, custom_id, not_run_code)


def request_counts(total: int | None, job: Counts | None, rejected: int) -> dict[str, int]:
    """A batch's ``request_counts`` from its job's: OpenAI has only completed and failed, and counts a
    request that did not run in a cancelled or expired batch as failed. So here vlmq's failed,
    cancelled and expired requests (jobs.status.Outcome) are all "failed", with the lines refused at
    validation (``rejected``); ``total`` is every line of the input file, or None for a batch of one
    source, whose requests are the job's items (they grow as the listing finds them)."""
    if total is None:
        total = (job.total if job else 0) + rejected
    done = job.completed if job else 0
    not_done = (job.failed + job.cancelled + job.expired) if job else 0
    return {"total": total, "completed": done, "failed": not_done + rejected}


def jsonl_line(line: dict[str, Any]) -> bytes:
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(map(jsonl_line, lines))
