"""Celery tasks: thin, like views. They take ids, call workers code, and turn a put-back into a retry."""

from __future__ import annotations

import uuid

from celery import Task

from jobs.dispatch import INFER_TASK, PREP_TASK
from jobs.errors import RetryableError
from workers import infer, prep
from workers.celery_app import app
from workers.context import get_context
from workers.inference.factory import get_engine


def _backoff(retries: int) -> int:
    return min(60, 2**retries)


@app.task(name=PREP_TASK, bind=True, max_retries=None)
def prep_source(self: Task, item_id: str) -> None:
    try:
        prep.prepare(get_context(), uuid.UUID(item_id))
    except RetryableError as e:
        # Attempts are capped in Postgres (items.attempts), not here: the row says when to stop.
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e


@app.task(name=INFER_TASK, bind=True, max_retries=None)
def infer_units(self: Task, unit_ids: list[str]) -> None:
    try:
        infer.infer(get_context(), get_engine(), [uuid.UUID(u) for u in unit_ids])
    except RetryableError as e:
        raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e
