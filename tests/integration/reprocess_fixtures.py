"""Builders for reprocessing tests: jobs brought to a known end state through the real service, on a
database of their own (a run selects across every job, so it must not see other tests' jobs)."""

from __future__ import annotations

import base64
import json
import uuid
from functools import cache
from typing import Any

import redis
from sqlalchemy import select, update

from jobs.adapters.storage import result_key
from jobs.config import Settings
from jobs.errors import CorruptMedia, EngineError
from jobs.models import Item, Job, Result
from jobs.schemas import JobCreate
from jobs.service import JobService
from tests.fixtures.models import PAGE_SIDE, taught_pdf

Outcome = tuple[str, str] | None  # (model_id, answer) of the page's result, or None: the page failed


@cache
def page_pngs() -> tuple[bytes, ...]:
    from workers.media.pdf import render_pdf

    return tuple(p.png for p in render_pdf(taught_pdf(), longest_side=PAGE_SIDE, max_pages=10))


def result(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "reasoning": "r", "answer": "a", "raw_text": "<think>r</think><answer>a</answer>", "boxes": [],
        "flags": [], "finish_reason": "stop", "truncated": False, "answer_missing": False,
        "prompt_tokens": 10, "completion_tokens": 5, "model_id": "m", "engine": "test",
        "prompt_version": "caption-v1",
    }  # fmt: skip
    return {**base, **kw}


def submit(
    service: JobService, custom_id: str, prompt: str | None = None, data: bytes = b"%PDF-1.7"
) -> uuid.UUID:
    key = f"in/{uuid.uuid4().hex}.pdf"
    service.store.put(key, data, "application/pdf")
    item = {"custom_id": custom_id, "uri": f"s3://{service.store.bucket}/{key}", "prompt": prompt}
    job, _ = service.submit("tenant-a", JobCreate.model_validate({"items": [item]}))
    return job.id


def source(service: JobService, job_id: uuid.UUID) -> Item:
    with service.sessions() as s:
        return s.scalars(select(Item).where(Item.job_id == job_id, Item.parent_id.is_(None))).one()


def pages_job(
    service: JobService, outcomes: list[Outcome], custom_id: str = "doc", prompt: str | None = None
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A completed job of one source whose pages (the taught PDF's, in S3) ended as ``outcomes``."""
    job_id, units = _running_job(service, len(outcomes), custom_id, prompt)
    for unit, out in zip(units, outcomes, strict=True):
        if out is None:
            service.fail_items([unit.id], EngineError("CUDA error: out of memory"))
        else:
            model_id, answer = out
            key = service.store.put(result_key(job_id, unit.id, 1), json.dumps({"answer": answer}).encode())
            stored = result(
                model_id=model_id, answer=answer, prompt_version=unit.prompt_version, payload_key=key
            )
            service.complete_units([(unit, stored)])
    assert service.finalize(job_id)
    return job_id, [u.id for u in units]


def running_job_with_a_failed_page(service: JobService) -> uuid.UUID:
    job_id, (first, _second) = _running_job(service, 2, "in-flight", None)
    service.fail_items([first.id], EngineError("CUDA error"))
    return job_id


def _running_job(
    service: JobService, n: int, custom_id: str, prompt: str | None
) -> tuple[uuid.UUID, list[Any]]:
    pngs = page_pngs()
    keys = [
        service.store.put(f"media/test/{uuid.uuid4().hex}.png", pngs[i % len(pngs)], "image/png")
        for i in range(n)
    ]
    job_id = submit(service, custom_id, prompt)
    src = source(service, job_id)
    assert service.begin_prep(src.id) is not None
    batches = service.finish_prep(src.id, [(i + 1, k) for i, k in enumerate(keys)])
    units = sorted(service.claim_units([u for b in batches for u in b]), key=lambda u: u.page)
    return job_id, units


def failed_source_job(service: JobService) -> uuid.UUID:
    """A completed job whose only source could not be read: it never got pages."""
    job_id = submit(service, "broken.pdf", data=b"%PDF-1.7\n1 0 obj <<")
    src = source(service, job_id)
    service.begin_prep(src.id)
    service.fail_items([src.id], CorruptMedia("not a readable PDF: truncated"))
    assert service.finalize(job_id)
    return job_id


def make_prompt_older(service: JobService, job_id: uuid.UUID) -> None:
    """As if the job ran before the caption preset moved from caption-v0 to its current version."""
    with service.sessions() as s, s.begin():
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(prompt="Old caption text.", prompt_version="caption-v0")
        )
        s.execute(update(Result).where(Result.job_id == job_id).values(prompt_version="caption-v0"))


def job_row(service: JobService, job_id: uuid.UUID) -> Job:
    with service.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def item_row(service: JobService, item_id: uuid.UUID) -> Item:
    with service.sessions() as s:
        item = s.get(Item, item_id)
        assert item is not None
        return item


def drain(settings: Settings, queue: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """Take every message off a Celery queue in Redis, oldest first: (task name, args, kwargs)."""
    client = redis.Redis.from_url(settings.redis.url or "")
    out = []
    try:
        while (raw := client.rpop(f"{settings.redis.key_prefix}{queue}")) is not None:
            msg = json.loads(raw)
            args, kwargs, _ = json.loads(base64.b64decode(msg["body"]))
            out.append((msg["headers"]["task"], args, kwargs))
    finally:
        client.close()
    return out
