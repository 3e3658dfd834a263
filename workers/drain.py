"""Drain (issue 27): a worker told to stop (SIGTERM: Kubernetes' termination, a preemptible host's
notice) takes no more work, lets its batches finish for ``queue.drain_grace_seconds``, then hands back
at once what is still running, aborting the engine's requests for it, and exits 0.

Celery's warm shutdown already stops taking messages and waits for the running tasks; what it lacks is
the bound. Without it a GPU batch of 1,024-token pages (about 40 s) outlives a 30 s notice, the worker
is killed, and its pages wait out their leases (``queue.lease_seconds``, 120 s) and a sweep. Here the
units go back to ready with their attempt given back (jobs.draining) and their messages are sent again,
so another worker takes them within a second; the task that ran them drops the engine's outputs.

A GPU worker's tasks run in its own process (threads or solo pool), where Celery's
``worker_shutting_down`` signal fires. A prep worker's tasks run in pool processes: Celery's warm
shutdown waits for them (a prep task renders a chunk of pages, seconds), and one killed at the end of
the grace period comes back after its lease, as after any crash.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from jobs import draining, sweeper
from jobs.service import JobService
from jobs.work import UnitWork

log = logging.getLogger(__name__)

Abort = Callable[[Sequence[str]], None]


@dataclass
class _Hold:
    units: list[UnitWork]
    abort: Abort | None
    handed_back: bool = False


class Drain:
    """The units this process runs, and what to do with them once it is told to stop."""

    def __init__(self) -> None:
        self.draining = threading.Event()
        self._lock = threading.Lock()
        self._holds: dict[int, _Hold] = {}
        self._idle = threading.Condition(self._lock)

    @contextmanager
    def holding(self, units: list[UnitWork], abort: Abort | None) -> Iterator[_Hold]:
        """While the block runs (the engine call) the drain may hand ``units`` back; after it, the
        hold's ``handed_back`` says whether it did (the outputs are then dropped)."""
        hold = _Hold(list(units), abort)
        with self._lock:
            self._holds[id(hold)] = hold
        try:
            yield hold
        finally:
            with self._lock:
                self._holds.pop(id(hold), None)
                self._idle.notify_all()

    def begin(self, service: JobService, grace_s: float) -> threading.Thread | None:
        """Told to stop: in ``grace_s`` seconds, whatever is still held is handed back (a thread)."""
        if self.draining.is_set():
            return None
        self.draining.set()
        log.warning("drain: stopping; running batches have %.0f s, then their units go back", grace_s)
        thread = threading.Thread(target=self._after, args=(service, grace_s), name="vlmq-drain", daemon=True)
        thread.start()
        return thread

    def _after(self, service: JobService, grace_s: float) -> None:
        with self._lock:
            if self._idle.wait_for(lambda: not self._holds, timeout=grace_s):
                log.info("drain: every batch finished within the grace period")
                return
        try:
            self.hand_back(service)
        except Exception as e:  # the database unreachable: the units come back after their leases
            log.warning("drain: hand-back failed (%s: %s); the leases will return them", type(e).__name__, e)

    def hand_back(self, service: JobService) -> list[uuid.UUID]:
        """Every held unit still running back to ready, its engine requests aborted, its message sent."""
        with self._lock:
            holds = [h for h in self._holds.values() if not h.handed_back]
            for h in holds:
                h.handed_back = True
        units = {u.id: u.attempt for h in holds for u in h.units}
        if not units:
            return []
        with service.sessions() as s, s.begin():
            moved = draining.hand_back(s, units)
        sweeper.resend(service, moved)  # their messages, as the sweeper sends those of waiting items
        for h in holds:
            if h.abort is not None:
                h.abort([str(u.id) for u in h.units])
        log.warning("drain: %d running units handed back (%d held)", len(moved), len(units))
        return [i for i, _, _ in moved]


DRAIN = Drain()  # the process's: Celery's signal and the inference tasks share it
