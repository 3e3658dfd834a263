"""A task's heartbeat: while it works on items, their Postgres leases are renewed every
``queue.heartbeat_seconds``. If the worker dies, renewals stop, the leases run out after
``queue.lease_seconds`` and the sweeper gives the items to another worker.

Each renewal also reports the items' job states, so a task learns that its job was cancelled (or
expired) while the engine is busy, and ``on_stop`` aborts the engine's requests for that job.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType

from jobs.service import JobService
from jobs.status import JOB_ACTIVE
from workers.liveness import touch

log = logging.getLogger(__name__)

OnStop = Callable[[set[uuid.UUID]], None]


class Heartbeat:
    def __init__(
        self,
        service: JobService,
        item_ids: Sequence[uuid.UUID],
        interval: float,
        on_stop: OnStop | None = None,
    ) -> None:
        self.service, self.item_ids, self.interval, self.on_stop = service, list(item_ids), interval, on_stop
        self.stopped_jobs: set[uuid.UUID] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmq-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            # A solo-pool worker runs its task inside Celery's loop, which then stops touching the
            # liveness file (workers.liveness): a task that still beats is alive.
            touch(self.service.settings.probe.live_file)
            self.beat()

    def beat(self) -> None:
        """One renewal (the thread calls it every interval). Never raises: a missed beat only brings the
        lease's end closer, and Postgres may be back for the next one."""
        try:
            states = self.service.renew_leases(self.item_ids)
        except Exception as e:  # Postgres unreachable, restarting: keep beating
            log.warning("heartbeat: lease renewal failed (%s: %s)", type(e).__name__, e)
            return
        stopped = {job for job, status in states.items() if status not in JOB_ACTIVE} - self.stopped_jobs
        if stopped:
            self.stopped_jobs |= stopped
            if self.on_stop is not None:
                try:
                    self.on_stop(stopped)
                except Exception:
                    log.exception("heartbeat: stopping the work of jobs %s failed", stopped)
