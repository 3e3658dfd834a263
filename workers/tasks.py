"""Celery tasks: thin, like views. They take ids, call workers code, and turn a put-back into a retry."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from celery import Task, signals

from jobs import sweeper
from jobs.adapters.db import DB_UNAVAILABLE
from jobs.adapters.dispatch import (
    FAN_OUT_TASK,
    INFER_TASK,
    LIST_TASK,
    PREP_TASK,
    REFRESH_TASK,
    REPROCESS_TASK,
    SWEEP_TASK,
)
from jobs.errors import RetryableError
from workers import infer, prep
from workers.backoff import backoff
from workers.celery_app import app
from workers.context import Priority, get_context, get_reprocessor
from workers.drain import DRAIN
from workers.inference.factory import get_engine

log = logging.getLogger(__name__)
# Retried with backoff: what the workers code put back, and a database it could not reach at all. Then
# an inference batch's units could not be given back: its claim goes to the retry (infer.ClaimsHeld,
# ``held``), which takes them back at once. A source being prepared is not: its lease runs out and the
# sweeper hands it on.
RETRIED = (RetryableError, *DB_UNAVAILABLE)


@signals.worker_shutting_down.connect
def _drain(how: str = "", **_: object) -> None:
    """SIGTERM (Celery's warm shutdown): the running batches get the grace period, then go back."""
    if how == "Warm":
        ctx = get_context()
        DRAIN.begin(ctx.service, ctx.settings.queue.drain_grace_seconds)


def _backoff(retries: int) -> int:
    return backoff(retries, int(get_context().settings.queue.retry_backoff_max_seconds))


def _retry(task: Task, e: Exception) -> Exception:
    """``task.retry`` with backoff (it raises). A batch that still holds its units (ClaimsHeld) sends its
    claim with the retry, as ``held``; otherwise the retry's message is this one's, ``held`` and all
    (the retry may have failed before it took them back)."""
    kwargs = None
    if isinstance(e, infer.ClaimsHeld):
        kwargs = {**(task.request.kwargs or {}), "held": {str(u): n for u, n in e.held.items()}}
    return task.retry(exc=e, kwargs=kwargs, countdown=_backoff(task.request.retries))


def _held(held: dict[str, int] | None) -> dict[uuid.UUID, int]:
    return {uuid.UUID(u): n for u, n in (held or {}).items()}


def _recheck(task: Task, words: int, args: list[object]) -> None:
    """A claim that held waiting work back (a tenant cap, or pages not yet due after a failure) hands
    its unused word of work (``words`` claims) to a later message: nothing else would tell a worker of
    that work once it may be taken. It comes back after ``fairness.recheck_seconds``, doubling while it
    is held back (at most the retry backoff's)."""
    if words <= 0:
        return
    settings = get_context().settings
    grown = settings.fairness.recheck_seconds * 2 ** min(task.request.retries, 10)
    delay = min(float(settings.queue.retry_backoff_max_seconds), grown)
    raise task.retry(args=args, kwargs={}, countdown=delay)


@app.task(name=PREP_TASK, bind=True, max_retries=None)
def prep_source(self: Task, item_id: str, lane: Priority = "normal") -> None:
    """A word that a source waits: the source whose turn it is is prepared (``item_id`` is a hint)."""
    try:
        claim = prep.prepare(get_context(lane))
    except RETRIED as e:
        # Attempts are capped in Postgres (items.attempts), not here: the row says when to stop.
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e
    _recheck(self, int(claim.capped and not claim.taken), [item_id, lane])


@app.task(name=INFER_TASK, bind=True, max_retries=None)
def infer_units(self: Task, unit_ids: list[str], held: dict[str, int] | None = None) -> None:
    """A word that ``len(unit_ids)`` units wait: a batch of whichever are next in turn is inferred.
    ``held``: set by a retry only (see ``_retry``)."""
    try:
        lane = infer.infer(get_context(), get_engine(), [uuid.UUID(u) for u in unit_ids], _held(held), True)
    except RETRIED as e:
        raise _retry(self, e) from e
    left = max(0, len(unit_ids) - lane.taken) if lane.capped else 0
    _recheck(self, left, [unit_ids[:left]])


@app.task(name=FAN_OUT_TASK)
def fan_out_prep(item_ids: list[str], priority: str) -> None:
    """One prep message per item of a large submission (jobs.adapters.dispatch.CeleryDispatcher.prep_many)."""
    dispatcher = get_context().service.dispatcher
    for item_id in item_ids:
        dispatcher.prep(uuid.UUID(item_id), priority)


@app.task(name=LIST_TASK, bind=True, max_retries=None)
def list_source(self: Task, job_id: str) -> None:
    """The next page of a job submitted as a source (jobs.listings); sends itself for the one after."""
    try:
        get_context().service.list_next(uuid.UUID(job_id))
    except RETRIED as e:
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e


@app.task(name=SWEEP_TASK)
def sweep() -> None:
    """Run by beat (workers.beat); see jobs.sweeper. A failed sweep is simply the next one's work."""
    sweeper.sweep(get_context().service)


@app.task(name=REFRESH_TASK, bind=True, max_retries=None)
def refresh_units(self: Task, run_id: str, unit_ids: list[str], held: dict[str, int] | None = None) -> None:
    """Recompute succeeded pages for a reprocessing run (their entries' attempts are capped in Postgres)."""
    lane = get_reprocessor().lane(uuid.UUID(run_id))
    ids = [uuid.UUID(u) for u in unit_ids]
    try:
        infer.run(get_context("low"), get_engine(), lane, ids, held=_held(held))
    except RETRIED as e:
        raise _retry(self, e) from e


@app.task(name=REPROCESS_TASK, bind=True, max_retries=None)
def reprocess_scheduled(self: Task, slot: str | None = None) -> None:
    """Celery beat's reprocess entry (``slot``: the sweeper's catch-up of a lost one). Safe to run twice
    for one slot: the second finds the run made. Retried like the other tasks: a Postgres restart at
    02:00 skipped that night's run (the soak)."""
    try:
        get_reprocessor().scheduled(slot=datetime.fromisoformat(slot) if slot else None)
    except RETRIED as e:
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e
