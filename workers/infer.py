"""Inference: claim a batch of page units, run them through the engine, store results."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence

from PIL import Image

from jobs.errors import EngineError, PermanentError, RetryableError, VlmqError
from jobs.reasoning import split_output
from jobs.service import UnitWork
from jobs.storage import result_key
from workers.context import WorkerContext
from workers.inference.engine import Engine, GenerationOutput, GenerationRequest
from workers.media.clip import VideoClip, is_clip_key, unpack
from workers.media.images import decode_image

log = logging.getLogger(__name__)


def infer(ctx: WorkerContext, engine: Engine, unit_ids: Sequence[uuid.UUID]) -> None:
    """Idempotent: only units this call moved ready -> running are worked on.

    Whatever fails after the claim (S3, the engine, Postgres, a bug), the units not yet done go back to
    ready, or fail with the reason once their attempts are spent: none is left running. Raises
    RetryableError only when units were put back to be tried again.
    """
    units = ctx.service.claim_units(unit_ids)
    if not units:
        return
    try:
        _run(ctx, engine, units)
    except Exception as e:
        err = e if isinstance(e, VlmqError) else EngineError(f"{type(e).__name__}: {e}")
        # give_back is a compare-and-set on running units: the ones already stored stay succeeded.
        back = ctx.service.give_back([u.id for u in units], err)
        _finalize(ctx, units)
        if back:
            raise (err if isinstance(err, RetryableError) else EngineError(str(err))) from e
        return
    _finalize(ctx, units)


def _run(ctx: WorkerContext, engine: Engine, units: list[UnitWork]) -> None:
    loaded = _load_media(ctx, units)
    requests = [_request(u, media) for u, media in loaded]
    outputs = engine.generate(requests) if requests else []
    for (unit, _), out in zip(loaded, outputs, strict=True):
        _store(ctx, engine, unit, out)


def _request(u: UnitWork, media: Image.Image | VideoClip) -> GenerationRequest:
    if isinstance(media, VideoClip):
        return GenerationRequest(str(u.id), u.prompt, (), u.max_new_tokens, u.temperature, video=media)
    return GenerationRequest(str(u.id), u.prompt, [media], u.max_new_tokens, u.temperature)


def _load_media(ctx: WorkerContext, units: list[UnitWork]) -> list[tuple[UnitWork, Image.Image | VideoClip]]:
    """Fetch each unit's page image or video clip; a unit whose media cannot be read fails alone."""
    loaded: list[tuple[UnitWork, Image.Image | VideoClip]] = []
    for u in units:
        try:
            loaded.append((u, _load(ctx, u)))
        except PermanentError as e:
            ctx.service.fail_items([u.id], e)
    return loaded


def _load(ctx: WorkerContext, unit: UnitWork) -> Image.Image | VideoClip:
    if is_clip_key(unit.media_key):
        return load_clip(ctx, unit)
    return decode_image(ctx.store.get(unit.media_key))


def load_clip(ctx: WorkerContext, unit: UnitWork) -> VideoClip:
    """A video unit's media: the clip prep stored, frames already sampled and sized (one S3 GET)."""
    return unpack(ctx.store.get(unit.media_key))


def _store(ctx: WorkerContext, engine: Engine, unit: UnitWork, out: GenerationOutput) -> None:
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
        "engine": engine.name,
        "prompt_version": unit.prompt_version,
    }
    key = result_key(unit.job_id, unit.id, 1)
    payload = {"custom_id": unit.custom_id, "page": unit.page, "item_id": str(unit.id), **result}
    ctx.store.put(key, json.dumps(payload, ensure_ascii=False).encode(), "application/json")
    ctx.service.complete_unit(unit, {**result, "payload_key": key})


def _finalize(ctx: WorkerContext, units: list[UnitWork]) -> None:
    for job_id in {u.job_id for u in units}:
        ctx.service.finalize(job_id)
