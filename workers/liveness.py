"""The liveness file (``probe.live_file``): its modification time says a worker or beat still turns.

``vlmq probe worker --live`` (a Kubernetes liveness probe) reads its age. Who touches it:

- a worker's consumer loop, every ``probe.live_interval_seconds`` (``Pulse``, a Celery consumer
  bootstep): the loop that takes messages is running, whatever the pool;
- each lease renewal of a task (workers.heartbeat): a solo-pool worker (the transformers engine) runs
  its task inside that loop, which then does not turn for the length of a batch;
- beat, each time it sends a message (``touch_on_publish``): its scheduler ticks.

A touch never raises: a full or read-only disk must not stop the work it reports on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import bootsteps

from jobs.config import Settings, get_settings

log = logging.getLogger(__name__)


def touch(path: str | None) -> None:
    """Set ``path``'s modification time to now (create it if missing); nothing when ``path`` is None."""
    if not path:
        return
    try:
        Path(path).touch()  # an existing file: only its modification time changes
    except OSError as e:
        log.warning("liveness: cannot touch %s (%s)", path, e)


class Pulse(bootsteps.StartStopStep):
    """Touch the liveness file from the consumer's event loop timer (the loop Celery reads messages in).

    Restarted with the consumer when the broker connection is lost and found again; while Celery keeps
    retrying a lost broker the file ages, and Celery itself gives up (and exits) after its retries."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        self.tref: Any = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        probe = get_settings().probe
        touch(probe.live_file)
        if probe.live_file and c.timer is not None:
            self.tref = c.timer.call_repeatedly(probe.live_interval_seconds, touch, (probe.live_file,))

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


def install_pulse(app: Any) -> None:
    """Add ``Pulse`` to a Celery app's consumer (before ``worker_main``)."""
    app.steps["consumer"].add(Pulse)


def touch_on_publish(settings: Settings) -> Callable[..., None]:
    """Beat: touch the liveness file after each message it sends (the sweep, every few seconds).
    Returns the signal's receiver (a test disconnects it)."""
    from celery.signals import after_task_publish

    path = settings.probe.live_file

    def on_publish(**_: Any) -> None:
        touch(path)

    touch(path)  # beat has started; its first sweep follows within one interval
    after_task_publish.connect(on_publish, weak=False)
    return on_publish
