"""Inference: claim a batch of units (pages, or a document's pages), run them through the engine,
store results."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from jobs import presets
from jobs.db import as_vlmq_error
from jobs.errors import EngineError, PermanentError, RetryableError, VlmqError
from jobs.fingerprint import settings_hash
from jobs.reasoning import regions, split_output
from jobs.service import JobService
from jobs.storage import result_key
from jobs.work import UnitWork
from workers.context import WorkerContext
from workers.heartbeat import Heartbeat
from workers.inference.busy import ENGINE_METER
from workers.inference.engine import Engine, GenerationOutput, GenerationRequest
from workers.inference.ladder import generate_checked
from workers.media import manifest
from workers.media.clip import VideoClip, is_clip_key, unpack

log = logging.getLogger(__name__)


class Lane(Protocol):
    """Where units are claimed from and their outcome goes. The job lane (below) moves the unit itself;
    jobs.reprocess's refresh lane claims a reprocessing entry and leaves the unit's state alone.

    ``leased``: the claim is the unit's own lease (renewed by a heartbeat) and the unit follows its job's
    state (cancel, expiry). A refresh lane's units stay succeeded: nothing to renew or to stop."""

    leased: bool

    def claim(self, unit_ids: Sequence[uuid.UUID]) -> list[UnitWork]: ...

    def complete(self, done: Sequence[tuple[UnitWork, dict[str, object]]]) -> None: ...

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None: ...

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]: ...

    def settle(self, units: Sequence[UnitWork]) -> None: ...


class JobLane:
    """The normal path: units move ready -> running -> succeeded | failed, then their jobs finalize."""

    leased = True

    def __init__(self, service: JobService) -> None:
        self.service = service

    def claim(self, unit_ids: Sequence[uuid.UUID]) -> list[UnitWork]:
        return self.service.claim_units(unit_ids)

    def complete(self, done: Sequence[tuple[UnitWork, dict[str, object]]]) -> None:
        self.service.complete_units(done)

    def fail(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> None:
        self.service.fail_items(unit_ids, error)

    def give_back(self, unit_ids: Sequence[uuid.UUID], error: VlmqError) -> list[uuid.UUID]:
        return self.service.give_back(unit_ids, error)

    def settle(self, units: Sequence[UnitWork]) -> None:
        """Settle the sources of these pages (only those: see repository.settle_sources), and the jobs."""
        for job_id in {u.job_id for u in units}:
            self.service.finalize(
                job_id, sorted({u.parent_id for u in units if u.job_id == job_id and u.parent_id})
            )


def infer(ctx: WorkerContext, engine: Engine, unit_ids: Sequence[uuid.UUID]) -> None:
    run(ctx, engine, JobLane(ctx.service), unit_ids)


def run(ctx: WorkerContext, engine: Engine, lane: Lane, unit_ids: Sequence[uuid.UUID]) -> None:
    """Idempotent: only units this call claimed are worked on.

    Whatever fails after the claim (S3, the engine, Postgres, a bug), the units not yet done are given
    back, or fail with the reason once their attempts are spent: none is left running. Raises
    RetryableError only when units were put back to be tried again.

    Cancellation is cooperative (leased lanes): the job's state is checked before the engine call and
    after it (units of a stopped job are cancelled, their outputs dropped), and while the engine runs
    the heartbeat aborts the requests of a job that stops.
    """
    units = lane.claim(unit_ids)
    if not units:
        return
    try:
        if lane.leased:
            beat = Heartbeat(
                ctx.service,
                [u.id for u in units],
                ctx.settings.queue.heartbeat_seconds,
                _aborter(engine, units),
            )
            with beat:
                _run(ctx, engine, lane, _going_on(ctx, units), lambda: bool(beat.stopped_jobs))
        else:
            _run(ctx, engine, lane, units, lambda: False)
    except Exception as e:
        err = as_vlmq_error(e, EngineError)
        # give_back is a compare-and-set on running units: the ones already stored stay succeeded.
        back = lane.give_back([u.id for u in units], err)
        lane.settle(units)
        if back:
            raise (err if isinstance(err, RetryableError) else EngineError(str(err))) from e
        return
    lane.settle(units)


@dataclass(frozen=True)
class _Loaded:
    unit: UnitWork
    images: list[Image.Image]
    prompt: str
    flags: tuple[str, ...]  # prep's, and text_hint_truncated
    video: VideoClip | None = None  # a video unit: its sampled clip, and no images

    def request(self) -> GenerationRequest:
        u = self.unit
        return GenerationRequest(
            str(u.id), self.prompt, self.images, u.max_new_tokens, u.temperature, video=self.video
        )


def _run(
    ctx: WorkerContext, engine: Engine, lane: Lane, units: list[UnitWork], stop: Callable[[], bool]
) -> None:
    loaded = _load_media(ctx, lane, units)
    requests = [x.request() for x in loaded]
    with ENGINE_METER.running(len(requests)):
        outputs = generate_checked(engine, requests, ctx.settings.model.retry_temperatures, stop)
    units_done = [x.unit for x in loaded]
    live = {u.id for u in _going_on(ctx, units_done)} if lane.leased else {u.id for u in units_done}
    done: list[tuple[UnitWork, dict[str, object]]] = []
    try:
        for x, out in zip(loaded, outputs, strict=True):
            if x.unit.id in live:
                done.append((x.unit, _store(ctx, engine, x, out)))
    finally:  # one transaction for the batch; if a payload could not be written, those before it still go
        lane.complete(done)


def _going_on(ctx: WorkerContext, units: list[UnitWork]) -> list[UnitWork]:
    """The units whose job is still active; the others are cancelled (or failed ``expired``) here."""
    by_job: dict[uuid.UUID, list[uuid.UUID]] = {}
    for u in units:
        by_job.setdefault(u.job_id, []).append(u.id)
    stopped = {j for j, ids in by_job.items() if ctx.service.stop_items(ids, j)}
    return [u for u in units if u.job_id not in stopped]


def _aborter(engine: Engine, units: list[UnitWork]) -> Callable[[set[uuid.UUID]], None]:
    def abort(jobs: set[uuid.UUID]) -> None:
        cancel = getattr(engine, "abort", None)
        ids = [str(u.id) for u in units if u.job_id in jobs]
        if cancel is not None and ids:
            log.info("aborting %d engine requests of stopped jobs %s", len(ids), sorted(map(str, jobs)))
            cancel(ids)

    return abort


def _load_media(ctx: WorkerContext, lane: Lane, units: list[UnitWork]) -> list[_Loaded]:
    """Fetch each unit's image(s) and text hint; a unit whose media cannot be read fails alone."""
    loaded = []
    for u in units:
        video = None
        try:
            if is_clip_key(u.media_key):  # frames already sampled and sized by prep: one S3 GET
                images, video = [], unpack(ctx.store.get(u.media_key))
            else:
                images = manifest.load_images(ctx.store, u.media_key)
        except PermanentError as e:
            lane.fail([u.id], e)
            continue
        prompt, flags = u.prompt, u.flags
        if u.text_key:  # the text_hint option: the page's own text layer goes into the prompt
            text = ctx.store.get(u.text_key).decode("utf-8", "replace")
            prompt, cut = presets.with_text_hint(prompt, text, ctx.settings.media.text_hint_max_chars)
            flags = (*flags, "text_hint_truncated") if cut else flags
        loaded.append(_Loaded(u, images, prompt, flags, video))
    return loaded


def _boxes(texts: list[str], images: list[Image.Image]) -> list[dict[str, Any]]:
    """Each box's text and its regions; in pixels when the unit showed one image (else unknown)."""
    size = images[0].size if len(images) == 1 else None
    return [
        {
            "text": t,
            "regions": [{"normalized": list(r.normalized), "box": _list(r.box)} for r in regions(t, size)],
        }
        for t in texts
    ]


def _list(box: tuple[int, ...] | None) -> list[int] | None:
    return None if box is None else list(box)


def _store(ctx: WorkerContext, engine: Engine, loaded: _Loaded, out: GenerationOutput) -> dict[str, object]:
    """The result row's values, after writing its payload to S3 under the version's own key."""
    unit = loaded.unit
    parsed = split_output(out.text)
    result = {
        "reasoning": parsed.reasoning,
        "answer": parsed.answer,
        "raw_text": out.text,
        "boxes": _boxes(parsed.boxes, loaded.images),
        "flags": [*loaded.flags, *out.flags, *parsed.flags],
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
