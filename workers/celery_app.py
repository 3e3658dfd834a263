"""The one Celery app: Redis broker, two queues (prep on CPU workers, gpu for inference), each with a
low-priority twin for reprocessing (prep-low, gpu-low), and beat's schedule.

Delivery settings favour "nothing lost": a task is acknowledged after it ran (acks_late) and put back
when its worker dies (reject_on_worker_lost); each worker takes one message at a time, since a GPU
batch is long and a prefetched message would wait behind it. No result backend: Postgres owns state.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from jobs.config import get_settings
from jobs.dispatch import GPU_LOW_QUEUE, GPU_QUEUE, PREP_LOW_QUEUE, PREP_QUEUE, broker_url, transport_options
from workers.beat import beat_schedule


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("vlmq", broker=broker_url(settings), include=["workers.tasks"])
    queues = (PREP_QUEUE, GPU_QUEUE, PREP_LOW_QUEUE, GPU_LOW_QUEUE)
    app.conf.update(
        task_queues=tuple(Queue(q) for q in queues),
        task_default_queue=PREP_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # visibility_timeout is longer than the longest task, so Redis does not redeliver a message
        # still being worked on.
        broker_transport_options=transport_options(settings),
        task_serializer="json",
        accept_content=["json"],
        beat_schedule=beat_schedule(settings),
        timezone="UTC",
    )
    return app


app = make_app()
