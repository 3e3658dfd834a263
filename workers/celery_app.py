"""The one Celery app: Redis broker; queues prep / prep-low (CPU workers), gpu / gpu-low (inference;
the low twins carry low-priority jobs and reprocessing) and maintenance (the sweeper), each worker
reading its queues in priority order; and beat's schedule (workers.beat).

Delivery settings favour "nothing lost": a task is acknowledged after it ran (acks_late) and put back
when its worker dies (reject_on_worker_lost); each worker takes one message at a time, since a GPU
batch is long and a prefetched message would wait behind it. No result backend: Postgres owns state.
Past that, Postgres leases and the sweeper (workers.beat, jobs.sweeper) recover whatever Redis or a
killed worker loses.
"""

from __future__ import annotations

from datetime import datetime

from celery import Celery

from jobs import clock
from jobs.config import Settings, get_settings
from jobs.dispatch import (
    GPU_QUEUE,
    PREP_QUEUE,
    broker_url,
    queue,
    transport_options,
    worker_queues,
)
from workers.beat import beat_schedule


class VlmqCelery(Celery):
    """Celery whose ``now()`` (what beat's crontab and intervals read) is the stack's clock (jobs.clock):
    a soak's simulated midnight fires the nightly reprocess. Real time unless VLMQ_CLOCK__SIMULATED."""

    stack_clock: clock.CachedOffset | None = None  # not "clock": Celery has a Lamport clock by that name

    def now(self) -> datetime:
        if self.stack_clock is None:
            return super().now()
        return self.stack_clock.now().astimezone(self.timezone)


def _simulated_clock(settings: Settings) -> clock.CachedOffset:
    from jobs.db import session_factory

    sessions = session_factory(settings)

    def read() -> float:
        with sessions() as s:
            return clock.offset(s)

    return clock.CachedOffset(read, simulated=True)


def make_app() -> Celery:
    settings = get_settings()
    q = settings.queue
    app = VlmqCelery("vlmq", broker=broker_url(settings), include=["workers.tasks"])
    app.conf.update(
        task_queues=[queue(name) for name in worker_queues([PREP_QUEUE, GPU_QUEUE])],
        task_default_queue=PREP_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # visibility_timeout is longer than the longest task (the hard time limit), so Redis does not
        # redeliver a message still being worked on.
        broker_transport_options=transport_options(settings),
        task_time_limit=q.task_time_limit_seconds,
        task_soft_time_limit=max(1, q.task_time_limit_seconds - 60),
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.state_dir / "celerybeat-schedule"),
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )
    if settings.clock.simulated:
        app.stack_clock = _simulated_clock(settings)
        app.conf.beat_max_loop_interval = 1  # a jump of hours must be noticed within a second
    if q.visibility_timeout_seconds <= q.task_time_limit_seconds:
        raise ValueError("VLMQ_QUEUE__VISIBILITY_TIMEOUT_SECONDS must be longer than the task time limit")
    return app


app = make_app()
