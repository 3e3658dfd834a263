"""Enqueue work by task name. The only module of jobs/ that knows Celery.

Messages carry ids only; Postgres holds the state, so a lost message loses no work (the sweeper
re-enqueues what should be moving).

Messages go through the nameless (direct-to-queue) exchange: with Redis, a named exchange routes through
binding keys that a FLUSHALL deletes, after which kombu drops every message it publishes without a word
until each process declares its queues again. A nameless exchange has no bindings to lose.

Priorities are separate queues: ``gpu`` before ``gpu-low``, ``prep`` before ``prep-low``; a worker
reads them in that order (Redis ``queue_order_strategy = priority``), so low work waits for normal work.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Protocol

import redis
from celery import Celery
from kombu import Exchange, Queue

from jobs.config import Settings

log = logging.getLogger(__name__)

PREP_TASK = "vlmq.prep_source"
INFER_TASK = "vlmq.infer_units"
SWEEP_TASK = "vlmq.sweep"
FAN_OUT_TASK = "vlmq.fan_out_prep"
REFRESH_TASK = "vlmq.refresh_units"  # recompute succeeded pages for a reprocessing run
REPROCESS_TASK = "vlmq.reprocess_scheduled"  # what Celery beat sends on the reprocess schedule
LIST_TASK = "vlmq.list_source"  # the next page of a job submitted as a source (jobs.listings)
PREP_QUEUE = "prep"
GPU_QUEUE = "gpu"
LOW_SUFFIX = "-low"
# The low lane: low-priority jobs and reprocessing. A worker consumes its lane's low queue after the
# normal one and takes from it only when the normal queue is empty (queue_order_strategy "priority").
PREP_LOW_QUEUE = PREP_QUEUE + LOW_SUFFIX
GPU_LOW_QUEUE = GPU_QUEUE + LOW_SUFFIX
LOW_QUEUES = {PREP_QUEUE: PREP_LOW_QUEUE, GPU_QUEUE: GPU_LOW_QUEUE}
MAINTENANCE_QUEUE = "maintenance"  # the sweeper; read first by every prep worker
# A Redis key that exists while Redis keeps its data: gone means flushed or restarted empty.
EPOCH_KEY = "vlmq:broker-epoch"


def queue_name(base: str, priority: str = "normal") -> str:
    return LOW_QUEUES[base] if priority == "low" else base


def queue(name: str) -> Queue:
    return Queue(name, Exchange(""), routing_key=name)


def worker_queues(names: Sequence[str]) -> list[str]:
    """What a worker asked for ``prep`` or ``gpu`` reads, highest priority first: the maintenance queue
    (prep workers), the queue, then its low-priority sibling."""
    out: list[str] = []
    for name in names:
        extra = [MAINTENANCE_QUEUE] if name == PREP_QUEUE else []
        low = [LOW_QUEUES[name]] if name in LOW_QUEUES else []
        out += [q for q in (*extra, name, *low) if q not in out]
    return out


class Dispatcher(Protocol):
    def prep(self, item_id: uuid.UUID, priority: str = "normal") -> None: ...

    def infer(self, unit_ids: Sequence[uuid.UUID], priority: str = "normal") -> None: ...

    def list_source(self, job_id: uuid.UUID, delay: float = 0.0) -> None: ...


def broker_url(settings: Settings) -> str:
    if not settings.redis.url:
        raise RuntimeError(
            "no Redis configured: set VLMQ_REDIS__URL (redis://host:6379/0) or run `vlmq dev up`"
        )
    return settings.redis.url


def transport_options(settings: Settings) -> dict[str, object]:
    opts: dict[str, object] = {
        "visibility_timeout": settings.queue.visibility_timeout_seconds,  # longer than the longest task
        "queue_order_strategy": "priority",  # the queues in the order given: normal before low
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
    """``low``: the reprocessing lane, where every message goes to the low queues whatever the job's
    priority. Its prep messages say so, so the pages they make are inferred in the low lane too."""

    def __init__(self, settings: Settings, low: bool = False) -> None:
        self._url, self._prefix = broker_url(settings), settings.redis.key_prefix
        self._app = _producer(self._url, self._prefix)
        self.low = low

    def _queue(self, base: str, priority: str) -> str:
        return queue_name(base, "low" if self.low else priority)

    def prep(self, item_id: uuid.UUID, priority: str = "normal") -> None:
        kwargs = {"lane": "low"} if self.low else {}
        self._send(PREP_TASK, [str(item_id)], self._queue(PREP_QUEUE, priority), kwargs)

    def infer(self, unit_ids: Sequence[uuid.UUID], priority: str = "normal") -> None:
        self._send(INFER_TASK, [[str(u) for u in unit_ids]], self._queue(GPU_QUEUE, priority))

    def list_source(self, job_id: uuid.UUID, delay: float = 0.0) -> None:
        """On the maintenance queue, which every prep worker reads first: a listing page is one S3 call
        and one insert, and must not wait behind the prep of the pages it found (pacing is the
        listing's own: jobs.listings)."""
        self._app.send_task(
            LIST_TASK, args=[str(job_id)], queue=queue(MAINTENANCE_QUEUE), countdown=delay or None
        )

    def refresh(self, run_id: uuid.UUID, unit_ids: Sequence[uuid.UUID]) -> None:
        self._send(REFRESH_TASK, [str(run_id), [str(u) for u in unit_ids]], GPU_LOW_QUEUE)

    def reprocess_scheduled(self, slot: datetime) -> None:
        """The scheduled reprocess task for ``slot``, sent again by the sweeper when beat's was lost: it
        makes that slot's run however late it runs (beat's own takes the slot of when it runs)."""
        self._send(REPROCESS_TASK, [], GPU_QUEUE, {"slot": slot.isoformat()})

    def prep_many(self, item_ids: Sequence[uuid.UUID], priority: str = "normal", chunk: int = 500) -> None:
        """One message per ``chunk`` items, which a prep worker fans out into one per item: a large job
        costs the producer a few Redis round trips instead of one per item."""
        if self.low:  # rare (a reprocessing run re-prepping failed sources): keep the lane on each message
            for item_id in item_ids:
                self.prep(item_id, priority)
            return
        for i in range(0, len(item_ids), chunk):
            ids = [str(x) for x in item_ids[i : i + chunk]]
            self._send(FAN_OUT_TASK, [ids, priority], queue_name(PREP_QUEUE, priority))

    def warm(self) -> None:
        """Open the broker connection now (the API does at start) rather than at the first message."""
        try:
            with self._app.producer_or_acquire() as producer:
                producer.connection.ensure_connection(max_retries=1)
        except Exception as e:  # Redis not up yet: the first message connects, as it would have
            log.info("broker not reachable yet (%s); the first message will connect", e)

    def _send(self, task: str, args: list[object], name: str, kwargs: dict[str, str] | None = None) -> None:
        self._app.send_task(task, args=args, kwargs=kwargs or {}, queue=queue(name))

    def broker_was_reset(self) -> bool:
        """True the first time it is asked after Redis lost its data (FLUSHALL, restart without
        persistence): every message is gone then, and the sweeper re-enqueues all waiting work at once."""
        client = redis.Redis.from_url(self._url, socket_timeout=10, socket_connect_timeout=10)
        try:
            return bool(client.set(self._prefix + EPOCH_KEY, "1", nx=True))
        finally:
            client.close()
