"""Inference: claim a batch of page units, run them through the engine, store results."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from jobs.errors import EngineError, PermanentError, RetryableError, VlmqError
from jobs.fingerprint import settings_hash
from jobs.reasoning import split_output
from jobs.service import JobService, UnitWork
from jobs.storage import result_key
from workers.context import WorkerContext
from workers.inference.engine import Engine, GenerationOutput, GenerationRequest
from workers.media.images import decode_image

log = logging.getLogger(__name__)


class Lane(Protocol):
    """Where units are claimed from and their outcome goes. The job lane (below) moves the unit itself;
    jobs.reprocess's refresh lane claims a reprocessing entry and leaves the unit's state alone."""

    def claim(self, unit_ids: Sequence[uuid.UUID]) -> list[UnitWork]: ...

    def complete(self, unit: UnitWork, result: dict[str, object]) -> None: ...

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None: ...

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]: ...

    def settle(self, units: Sequence[UnitWork]) -> None: ...


class JobLane:
    """The normal path: units move ready -> running -> succeeded | failed, then their jobs finalize."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def claim(self, unit_ids: Sequence[uuid.UUID]) -> list[UnitWork]:
        return self.service.claim_units(unit_ids)

    def complete(self, unit: UnitWork, result: dict[str, object]) -> None:
        self.service.complete_unit(unit, result)

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        self.service.fail_items(unit_ids, error)

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        return self.service.give_back(unit_ids, error)

    def settle(self, units: Sequence[UnitWork]) -> None:
        for job_id in {u.job_id for u in units}:
            self.service.finalize(job_id)


def infer(ctx: WorkerContext, engine: Engine, unit_ids: Sequence[uuid.UUID]) -> None:
    run(ctx, engine, JobLane(ctx.service), unit_ids)


def run(ctx: WorkerContext, engine: Engine, lane: Lane, unit_ids: Sequence[uuid.UUID]) -> None:
    """Idempotent: only units this call claimed are worked on.

    Whatever fails after the claim (S3, the engine, Postgres, a bug), the units not yet done are given
    back, or fail with the reason once their attempts are spent: none is left running. Raises
    RetryableError only when units were put back to be tried again.
    """
    units = lane.claim(unit_ids)
    if not units:
        return
    try:
        _run(ctx, engine, lane, units)
    except Exception as e:
        err = e if isinstance(e, VlmqError) else EngineError(f"{type(e).__name__}: {e}")
        # give_back is a compare-and-set on running units: the ones already stored stay succeeded.
        back = lane.give_back([u.id for u in units], err)
        lane.settle(units)
        if back:
            raise (err if isinstance(err, RetryableError) else EngineError(str(err))) from e
        return
    lane.settle(units)


def _run(ctx: WorkerContext, engine: Engine, lane: Lane, units: list[UnitWork]) -> None:
    loaded = _load_media(ctx, lane, units)
    requests = [
        GenerationRequest(str(u.id), u.prompt, [img], u.max_new_tokens, u.temperature) for u, img in loaded
    ]
    outputs = engine.generate(requests) if requests else []
    for (unit, _), out in zip(loaded, outputs, strict=True):
        lane.complete(unit, _store(ctx, engine, unit, out))


def _load_media(ctx: WorkerContext, lane: Lane, units: list[UnitWork]) -> list[tuple[UnitWork, Image.Image]]:
    """Fetch each unit's page image; a unit whose image cannot be read fails alone."""
    loaded = []
    for u in units:
        try:
            loaded.append((u, decode_image(ctx.store.get(u.media_key))))
        except PermanentError as e:
            lane.fail([u.id], e)
    return loaded


def _store(ctx: WorkerContext, engine: Engine, unit: UnitWork, out: GenerationOutput) -> dict[str, object]:
    """The result row's values, after writing its payload to S3 under the version's own key."""
    parsed = split_output(out.text)
    result = {
        "reasoning": parsed.reasoning,
        "answer": parsed.answer,
        "raw_text": out.text,
        "boxes": list(parsed.boxes),
        "flags": [*out.flags, *parsed.flags],
        "finish_reason": out.finish_reason,
        "truncated": parsed.truncated,
        "answer_missing": parsed.answer_missing,
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "model_id": engine.model_id,
        "model_revision": ctx.settings.model.revision,
        "engine": engine.name,
        "prompt_version": unit.prompt_version,
        "settings": dict(unit.settings),
        "settings_hash": settings_hash(unit.settings),
    }
    key = result_key(unit.job_id, unit.id, unit.version)
    payload = {"custom_id": unit.custom_id, "page": unit.page, "item_id": str(unit.id), **result}
    payload["version"] = unit.version
    ctx.store.put(key, json.dumps(payload, ensure_ascii=False).encode(), "application/json")
    return {**result, "payload_key": key}
