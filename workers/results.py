"""A batch's outputs stored: each result's payload to S3, the result rows and the units' states to
Postgres in one transaction, then the batch's sources and jobs settled (``finish``).

The records (``Answered``) carry no images, only what storing needs, so that a writer process beside
the GPU worker can do this work (``workers.writers``) as well as the worker's own thread.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from jobs.adapters.storage import result_key
from jobs.fingerprint import settings_hash
from jobs.prompts.reasoning import regions, split_output
from jobs.work import UnitWork
from workers.context import WorkerContext
from workers.inference.engine import GenerationOutput
from workers.lanes import Lane


@dataclass(frozen=True)
class Answered:
    """One unit's output on its way to storage."""

    unit: UnitWork
    flags: tuple[str, ...]  # prep's, and text_hint_truncated
    size: tuple[int, int] | None  # the page's pixels when the unit showed one image: boxes in pixels
    output: GenerationOutput


@dataclass(frozen=True)
class EngineFacts:
    """What a result records of the engine that made it."""

    name: str
    model_id: str


def finish(
    ctx: WorkerContext,
    lane: Lane,
    units: Sequence[UnitWork],
    answered: Sequence[Answered],
    engine: EngineFacts,
) -> None:
    """Store ``answered`` and settle ``units`` (every unit the batch claimed). Units whose job stopped
    meanwhile are cancelled (or failed ``expired``) instead, their outputs dropped. The payloads are
    written ``s3.put_concurrency`` at once; if one cannot be written, the results whose payloads were
    written are still stored and the first error is raised (the caller gives the rest back and settles)."""
    done_units = [a.unit for a in answered]
    live = {u.id for u in drop_stopped(ctx, done_units)} if lane.leased else {u.id for u in done_units}
    done, error = _store_all(ctx, engine, [a for a in answered if a.unit.id in live])
    lane.complete(done)  # one transaction for the batch, for the payloads that were written
    if error is not None:
        raise error
    lane.settle(units)


def _store_all(
    ctx: WorkerContext, engine: EngineFacts, answered: Sequence[Answered]
) -> tuple[list[tuple[UnitWork, dict[str, object]]], Exception | None]:
    """Each payload written (several at once: each PUT is a round trip, and a batch's are independent),
    in the batch's order: the rows for those written, and the first error."""
    store = functools.partial(_try_store, ctx, engine)
    threads = min(len(answered), ctx.settings.s3.put_concurrency)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(store, answered))
    else:  # one payload (a first page, an image): no thread
        outcomes = [store(a) for a in answered]
    done = [(a.unit, o) for a, o in zip(answered, outcomes, strict=True) if not isinstance(o, Exception)]
    return done, next((o for o in outcomes if isinstance(o, Exception)), None)


def _try_store(ctx: WorkerContext, engine: EngineFacts, a: Answered) -> dict[str, object] | Exception:
    try:
        return _store(ctx, engine, a)
    except Exception as e:  # the others of the batch are still written; the first error is raised after
        return e


def drop_stopped(ctx: WorkerContext, units: list[UnitWork]) -> list[UnitWork]:
    """The units whose job is still active; the others are cancelled (or failed ``expired``) here."""
    by_job: dict[uuid.UUID, list[uuid.UUID]] = {}
    for u in units:
        by_job.setdefault(u.job_id, []).append(u.id)
    stopped = {j for j, ids in by_job.items() if ctx.service.stop_items(ids, j)}
    return [u for u in units if u.job_id not in stopped]


def _boxes(texts: list[str], size: tuple[int, int] | None) -> list[dict[str, Any]]:
    """Each box's text and its regions; in pixels when the unit showed one image (else unknown)."""
    return [
        {
            "text": t,
            "regions": [{"normalized": list(r.normalized), "box": _list(r.box)} for r in regions(t, size)],
        }
        for t in texts
    ]


def _list(box: tuple[int, ...] | None) -> list[int] | None:
    return None if box is None else list(box)


def _store(ctx: WorkerContext, engine: EngineFacts, a: Answered) -> dict[str, object]:
    """The result row's values, after writing its payload to S3 under the version's own key."""
    unit, out = a.unit, a.output
    parsed = split_output(out.text)
    result = {
        "reasoning": parsed.reasoning,
        "answer": parsed.answer,
        "raw_text": out.text,
        "boxes": _boxes(parsed.boxes, a.size),
        "flags": [*a.flags, *out.flags, *parsed.flags],
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
