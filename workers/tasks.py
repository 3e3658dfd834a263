"""Celery tasks: thin, like views. They take ids, call workers code, and turn a put-back into a retry."""

from __future__ import annotations

import uuid

from celery import Task

from jobs.dispatch import INFER_TASK, PREP_TASK, REFRESH_TASK, REPROCESS_TASK
from jobs.errors import RetryableError
from workers import infer, prep
from workers.celery_app import app
from workers.context import Lane, get_context, get_reprocessor
from workers.inference.factory import get_engine


def _backoff(retries: int) -> int:
    return min(60, 2**retries)


@app.task(name=PREP_TASK, bind=True, max_retries=None)
def prep_source(self: Task, item_id: str, lane: Lane = "normal") -> None:
    try:
        prep.prepare(get_context(lane), uuid.UUID(item_id))
    except RetryableError as e:
        # Attempts are capped in Postgres (items.attempts), not here: the row says when to stop.
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e


@app.task(name=INFER_TASK, bind=True, max_retries=None)
def infer_units(self: Task, unit_ids: list[str]) -> None:
    try:
        infer.infer(get_context(), get_engine(), [uuid.UUID(u) for u in unit_ids])
    except RetryableError as e:
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e


@app.task(name=REFRESH_TASK, bind=True, max_retries=None)
def refresh_units(self: Task, run_id: str, unit_ids: list[str]) -> None:
    """Recompute succeeded pages for a reprocessing run (their entries' attempts are capped in Postgres)."""
    lane = get_reprocessor().lane(uuid.UUID(run_id))
    try:
        infer.run(get_context("low"), get_engine(), lane, [uuid.UUID(u) for u in unit_ids])
    except RetryableError as e:
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e


@app.task(name=REPROCESS_TASK)
def reprocess_scheduled() -> None:
    """Celery beat's reprocess entry. Safe to run twice for one slot: the second finds the run made."""
    get_reprocessor().scheduled()
