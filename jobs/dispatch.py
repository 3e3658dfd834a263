"""Enqueue work by task name. The only module of jobs/ that knows Celery.

Messages carry ids only; Postgres holds the state, so a lost message loses no work (the sweeper
re-enqueues what should be moving).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from celery import Celery

from jobs.config import Settings

PREP_TASK = "vlmq.prep_source"
INFER_TASK = "vlmq.infer_units"
PREP_QUEUE = "prep"
GPU_QUEUE = "gpu"


class Dispatcher(Protocol):
    def prep(self, item_id: uuid.UUID) -> None: ...

    def infer(self, unit_ids: Sequence[uuid.UUID]) -> None: ...


def broker_url(settings: Settings) -> str:
    if not settings.redis.url:
        raise RuntimeError(
            "no Redis configured: set VLMQ_REDIS__URL (redis://host:6379/0) or run `vlmq dev up`"
        )
    return settings.redis.url


def transport_options(settings: Settings) -> dict[str, object]:
    opts: dict[str, object] = {"visibility_timeout": 6 * 3600}  # longer than the longest task
    if settings.redis.key_prefix:
        opts["global_keyprefix"] = settings.redis.key_prefix
    return opts


@lru_cache(maxsize=4)
def _producer(url: str, prefix: str) -> Celery:
    # A bare app for sending: it imports no task code, so the API never loads workers/.
    app = Celery("vlmq-producer", broker=url, set_as_current=False)
    if prefix:
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
    return app


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        self._app = _producer(broker_url(settings), settings.redis.key_prefix)

    def prep(self, item_id: uuid.UUID) -> None:
        self._app.send_task(PREP_TASK, args=[str(item_id)], queue=PREP_QUEUE)

    def infer(self, unit_ids: Sequence[uuid.UUID]) -> None:
        self._app.send_task(INFER_TASK, args=[[str(u) for u in unit_ids]], queue=GPU_QUEUE)
