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
REFRESH_TASK = "vlmq.refresh_units"  # recompute succeeded pages for a reprocessing run
REPROCESS_TASK = "vlmq.reprocess_scheduled"  # what Celery beat sends on the reprocess schedule
PREP_QUEUE = "prep"
GPU_QUEUE = "gpu"
# The low lane: reprocessing. A worker consumes its lane's low queue after the normal one and takes
# from it only when the normal queue is empty (queue_order_strategy "priority" below).
PREP_LOW_QUEUE = "prep-low"
GPU_LOW_QUEUE = "gpu-low"
LOW_QUEUES = {PREP_QUEUE: PREP_LOW_QUEUE, GPU_QUEUE: GPU_LOW_QUEUE}


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
    opts: dict[str, object] = {
        "visibility_timeout": 6 * 3600,  # longer than the longest task
        # BRPOP the worker's queues in the order it lists them (normal before low), instead of Kombu's
        # default round robin, so low-lane work never delays interactive work.
        "queue_order_strategy": "priority",
    }
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
    """``low``: the reprocessing lane. Its prep messages say so, so the pages they make are inferred
    in the low lane too."""

    def __init__(self, settings: Settings, low: bool = False) -> None:
        self._app = _producer(broker_url(settings), settings.redis.key_prefix)
        self.low = low

    def _queue(self, queue: str) -> str:
        return LOW_QUEUES[queue] if self.low else queue

    def prep(self, item_id: uuid.UUID) -> None:
        kwargs = {"lane": "low"} if self.low else {}
        self._app.send_task(PREP_TASK, args=[str(item_id)], kwargs=kwargs, queue=self._queue(PREP_QUEUE))

    def infer(self, unit_ids: Sequence[uuid.UUID]) -> None:
        self._app.send_task(INFER_TASK, args=[[str(u) for u in unit_ids]], queue=self._queue(GPU_QUEUE))

    def refresh(self, run_id: uuid.UUID, unit_ids: Sequence[uuid.UUID]) -> None:
        args = [str(run_id), [str(u) for u in unit_ids]]
        self._app.send_task(REFRESH_TASK, args=args, queue=GPU_LOW_QUEUE)
