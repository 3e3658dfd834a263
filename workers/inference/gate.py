"""How far ahead of its vLLM engine a GPU worker claims (``model.claim_ahead``), and urgent claims while
the engine is full.

A GPU worker runs many task threads (``Settings.gpu_tasks``), each claiming a batch in turn
(jobs.scheduling.fairness) and handing it to the one engine. Without a gate every thread claims as soon
as it has a message: 128 threads x 8 pages, a thousand pages claimed while the engine holds 512. A small
job submitted then is claimed only when a thread frees, that is when all 8 of a batch's pages are done,
which in a bulk job's lockstep start is a whole engine round (about 40 s on the H200 at 1,024 tokens).
So a thread claims only when the engine will soon have places for what it takes: the places it has free
(``free()``: its backlog's limit less the requests inside and waiting for one), less what other threads
have claimed and not yet handed over, plus ``ahead`` (enough fetched ahead to refill the engine).

While the engine is full, one thread at a time (the scout) looks every ``poll_s`` for urgent work only:
units whose rank is below ``urgent_below`` (a turn within the engine's first ``max_num_seqs``, what a
small job of a tenant with little in flight gets). The engine takes urgent requests beyond its limit
(workers.inference.backlog) and may give them a running slot (workers.inference.vllm_engine). The other
threads wait for places: a freed place wakes one, and each that passes wakes the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

POLL_S = 1.0  # how often the scout looks for urgent work while the engine is full


@dataclass
class Ticket:
    """What a thread may claim: ``below`` None, a batch in turn; else only units ranked below it."""

    below: int | None


class ClaimGate:
    def __init__(
        self, free: Callable[[], int], ahead: int, urgent_below: int, poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._free, self.ahead, self.urgent_below, self.poll_s = free, ahead, urgent_below, poll_s
        self._clock = clock
        self._cond = threading.Condition()
        self._reserved: dict[int, int] = {}  # thread id -> claims it may still hand over
        self._scout: int | None = None  # the thread looking for urgent work

    @property
    def reserved(self) -> int:
        return sum(self._reserved.values())

    def room(self) -> int:
        """Claims that may be made now."""
        return self._free() - self.reserved + self.ahead

    @contextmanager
    def enter(self, n: int) -> Iterator[Ticket]:
        """Wait until ``n`` claims fit (then they are reserved until ``handed`` or the block ends), or,
        as the scout, until ``poll_s`` passed with the engine full: then only urgent work is claimed."""
        me = threading.get_ident()
        with self._cond:
            deadline = None
            while self.room() < n:
                if self._scout is None:
                    self._scout = me
                if self._scout == me:
                    deadline = deadline or self._clock() + self.poll_s
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait(self.poll_s)  # woken by a freed place; the timeout: a lost wake-up
            ticket = Ticket(None if self.room() >= n else self.urgent_below)
            if self._scout == me and ticket.below is None:
                self._scout = None
            self._reserved[me] = n
            self._cond.notify()  # the next waiter: room for it too, or it becomes the scout
        try:
            yield ticket
        finally:
            self.handed()

    def handed(self) -> None:
        """This thread's claims reached the engine (which counts them now) or were not made; a scout
        that claimed is one no longer."""
        me = threading.get_ident()
        with self._cond:
            if self._scout == me:
                self._scout = None
            if self._reserved.pop(me, None) is not None:
                self._cond.notify()

    def freed(self) -> None:
        """A place in the engine was given back (called by the engine). One waiter is woken a place,
        and each that passes wakes the next: not the whole herd of task threads at every place."""
        with self._cond:
            self._cond.notify()
