"""Inference: claim a batch of units (pages, or a document's pages), run them through the engine,
store results (``workers.results``: in this thread, or in a result writer process, ``workers.writers``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from jobs.adapters.db import DB_UNAVAILABLE, as_vlmq_error
from jobs.adapters.storage import BlobStore
from jobs.errors import DatabaseUnavailable, EngineError, PermanentError, RetryableError, VlmqError
from jobs.prompts import presets
from jobs.work import Held, UnitWork
from workers import results, writers
from workers.context import WorkerContext
from workers.drain import DRAIN
from workers.heartbeat import Heartbeat
from workers.inference.busy import ENGINE_METER
from workers.inference.engine import Engine, GenerationRequest, needs_pixels
from workers.inference.ladder import generate_checked
from workers.lanes import JobLane, Lane
from workers.media import manifest
from workers.media.clip import VideoClip, is_clip_key, unpack
from workers.media.images import PNG_HEADER, decode_image, png_size
from workers.results import Answered, EngineFacts

log = logging.getLogger(__name__)


# The lanes live in workers.lanes; named here as before.
__all__ = ["ClaimsHeld", "infer", "run"]


class ClaimsHeld(DatabaseUnavailable):
    """A batch failed and its units could not be given back, the database being unreachable: they are
    still running under this run's claim. ``held`` goes to the task's retry, which takes them back."""

    def __init__(self, message: str = "", held: Held | None = None) -> None:
        super().__init__(message)
        self.held = dict(held or {})


def infer(
    ctx: WorkerContext,
    engine: Engine,
    unit_ids: Sequence[uuid.UUID],
    held: Held | None = None,
    in_turn: bool = False,
) -> JobLane:
    """Infer ``unit_ids``; or, ``in_turn`` (what an inference message means), as many units as it names,
    whichever are next in turn (jobs.scheduling.fairness). The lane says what was claimed.

    An engine with a claim gate (vLLM: workers.inference.gate) is claimed for in turn only when it will
    soon have places; while it is full this thread may be the one that looks for urgent work only, and
    looks again until it finds some or places free."""
    writer = writers.for_settings(ctx.settings)
    gate = getattr(engine, "gate", None) if in_turn and not held else None
    if gate is None:
        lane = JobLane(ctx.service, in_turn)
        run(ctx, engine, lane, unit_ids, writer, held)
        return lane
    while True:
        with gate.enter(max(len(unit_ids), ctx.settings.limits.batch_size)) as ticket:
            lane = JobLane(ctx.service, in_turn, ticket.below)
            run(ctx, engine, lane, unit_ids, writer, held)
        if ticket.below is None or lane.taken or DRAIN.draining.is_set():
            return lane


def run(
    ctx: WorkerContext, engine: Engine, lane: Lane, unit_ids: Sequence[uuid.UUID],
    writer: writers.Writers | None = None, held: Held | None = None,
) -> None:  # fmt: skip
    """Idempotent: only units this call claimed are worked on. ``writer``: the job lane's results are
    stored by a result writer process (``workers.writers``), else by this thread. ``held``: claims of
    this task's earlier run that it could not give back (ClaimsHeld), taken back and claimed again.

    Whatever fails after the claim (S3, the engine, Postgres, a bug), the units not yet done are given
    back, or fail with the reason once their attempts are spent: none is left running. Raises
    RetryableError only when units were put back to be tried again, and ClaimsHeld when the database
    could not be reached to give them back.

    Cancellation is cooperative (leased lanes): the job's state is checked before the engine call and
    after it (units of a stopped job are cancelled, their outputs dropped), and while the engine runs
    the heartbeat aborts the requests of a job that stops.
    """
    units = lane.claim(unit_ids, held)
    if not units:
        return
    facts = EngineFacts(engine.name, engine.model_id)
    try:
        if lane.leased:
            beat = Heartbeat(
                ctx.service,
                [u.id for u in units],
                ctx.settings.queue.heartbeat_seconds,
                _aborter(engine, units),
            )
            with beat:  # stored while the heartbeat still renews the units' leases
                with DRAIN.holding(units, getattr(engine, "abort", None)) as hold:
                    live = results.drop_stopped(ctx, units)
                    answered = _run(
                        ctx, engine, lane, live, lambda: bool(beat.stopped_jobs) or hold.handed_back
                    )
                if hold.handed_back:  # the worker is stopping (workers.drain): the units are waiting again
                    return
                _finish(ctx, lane, units, answered, facts, writer)
        else:
            _finish(ctx, lane, units, _run(ctx, engine, lane, units, lambda: False), facts, writer)
    except Exception as e:
        err = as_vlmq_error(e, EngineError)
        back = _give_back(lane, units, err)
        lane.settle(units)
        if back:
            raise (err if isinstance(err, RetryableError) else EngineError(str(err))) from e


def _give_back(lane: Lane, units: list[UnitWork], err: VlmqError) -> list[uuid.UUID]:
    """``lane.give_back``, a compare-and-set on running units: the ones already stored stay succeeded.
    With the database unreachable, the units stay running under this claim; ClaimsHeld hands the claim
    to the task's retry, which takes them back at once instead of after their lease and a sweep."""
    try:
        return lane.give_back([u.id for u in units], err)
    except DB_UNAVAILABLE as lost:
        held = {u.id: u.attempt for u in units}
        raise ClaimsHeld(f"{err}; {len(held)} units not given back: {lost}"[:2000], held) from lost


def _finish(
    ctx: WorkerContext, lane: Lane, units: list[UnitWork], answered: list[Answered], engine: EngineFacts,
    writer: writers.Writers | None,
) -> None:  # fmt: skip
    """Store and settle (``results.finish``): in a writer process for the job lane when there are
    writers, else here."""
    if writer is not None and isinstance(lane, JobLane):
        writer.finish(units, answered, engine)
    else:
        results.finish(ctx, lane, units, answered, engine)


@dataclass(frozen=True)
class _Media:
    """A unit's media as the engine gets it: its pages' stored keys, and their pixels unless the engine
    reads the stored pages itself; or a video's sampled clip."""

    keys: tuple[str, ...] = ()
    images: tuple[Image.Image, ...] = ()
    size: tuple[int, int] | None = None  # the page's pixels when the unit shows one: boxes in pixels
    video: VideoClip | None = None


@dataclass(frozen=True)
class _Loaded:
    unit: UnitWork
    media: _Media
    prompt: str
    flags: tuple[str, ...]  # prep's, and text_hint_truncated

    def request(self) -> GenerationRequest:
        u, m = self.unit, self.media
        return GenerationRequest(
            str(u.id), self.prompt, m.images, u.max_new_tokens, u.temperature, video=m.video,
            priority=u.rank, image_keys=m.keys,
        )  # fmt: skip


def _run(
    ctx: WorkerContext, engine: Engine, lane: Lane, units: list[UnitWork], stop: Callable[[], bool]
) -> list[Answered]:
    """The engine's outputs for the units whose media could be read (the others failed alone)."""
    loaded = _load_media(ctx, lane, units, needs_pixels(engine))
    requests = [x.request() for x in loaded]
    with ENGINE_METER.running(len(requests)):
        outputs = generate_checked(engine, requests, ctx.settings.model.retry_temperatures, stop)
    return [Answered(x.unit, x.flags, x.media.size, out) for x, out in zip(loaded, outputs, strict=True)]


def _aborter(engine: Engine, units: list[UnitWork]) -> Callable[[set[uuid.UUID]], None]:
    def abort(jobs: set[uuid.UUID]) -> None:
        cancel = getattr(engine, "abort", None)
        ids = [str(u.id) for u in units if u.job_id in jobs]
        if cancel is not None and ids:
            log.info("aborting %d engine requests of stopped jobs %s", len(ids), sorted(map(str, jobs)))
            cancel(ids)

    return abort


def _load_media(ctx: WorkerContext, lane: Lane, units: list[UnitWork], pixels: bool) -> list[_Loaded]:
    """Fetch each unit's media (``pixels``: decoded, else only their sizes) and text hint; a unit whose
    media cannot be read fails alone."""
    loaded = []
    for u in units:
        try:
            media = _read_media(ctx.store, u.media_key, pixels)
        except PermanentError as e:
            lane.fail([u.id], e)
            continue
        prompt, flags = u.prompt, u.flags
        if u.text_key:  # the text_hint option: the page's own text layer goes into the prompt
            text = ctx.store.get(u.text_key).decode("utf-8", "replace")
            prompt, cut = presets.with_text_hint(prompt, text, ctx.settings.media.text_hint_max_chars)
            flags = (*flags, "text_hint_truncated") if cut else flags
        loaded.append(_Loaded(u, media, prompt, flags))
    return loaded


def _read_media(store: BlobStore, media_key: str, pixels: bool) -> _Media:
    if is_clip_key(media_key):  # frames already sampled and sized by prep: one S3 GET
        return _Media(video=unpack(store.get(media_key)))
    keys = tuple(manifest.image_keys(store, media_key))
    if pixels:
        images = tuple(decode_image(store.get(k)) for k in keys)
        sizes = [i.size for i in images]
    else:
        # The engine sends the stored pages by key: only their headers are read, for the sizes, and so
        # that a missing page fails its unit here, alone, not the whole batch at the server.
        images, sizes = (), [png_size(store.get_start(k, PNG_HEADER)) for k in keys]
    return _Media(keys, images, sizes[0] if len(sizes) == 1 else None)
